"""The checkpoint format: round trip, and a clear CheckpointError for every broken file."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from model.checkpoint import (
    DEFAULT_TEMPERATURE,
    METADATA_FILE,
    WEIGHTS_FILE,
    VersionMetadata,
    load_checkpoint,
    save_checkpoint,
)
from model.errors import CheckpointError
from model.network import CVAE
from training.presets import preset


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(tmp_path, CVAE(preset("tiny")), {"note": "test"})
    return tmp_path


def test_round_trip_rebuilds_the_model_from_its_stored_config(saved: Path) -> None:
    checkpoint = load_checkpoint(saved)
    torch.manual_seed(0)
    original = CVAE(preset("tiny"))
    for name, tensor in original.state_dict().items():
        assert torch.equal(checkpoint.model.state_dict()[name], tensor)
    assert checkpoint.model.config == preset("tiny")
    assert checkpoint.metadata["note"] == "test"
    assert len(checkpoint.metadata["weights_sha256"]) == 64
    assert not checkpoint.model.training


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_weights_are_refused(saved: Path) -> None:
    _flip_byte(saved / WEIGHTS_FILE, -10)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(saved)


def test_truncated_weights_are_refused(saved: Path) -> None:
    weights = saved / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(saved)


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, METADATA_FILE])
def test_missing_files_are_refused(saved: Path, missing: str) -> None:
    (saved / missing).unlink()
    with pytest.raises(CheckpointError, match=missing):
        load_checkpoint(saved)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "nothing-here")


def test_invalid_metadata_json_and_format_version(saved: Path) -> None:
    meta_path = saved / METADATA_FILE
    metadata = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**metadata, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(saved)
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(saved)


def test_weights_that_do_not_fit_the_config_are_refused(saved: Path) -> None:
    meta_path = saved / METADATA_FILE
    metadata = json.loads(meta_path.read_text())
    metadata["config"]["latent_dim"] = 5
    meta_path.write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(saved)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_planted_pickle_is_refused_and_never_executed(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "executed.txt"
    payload = pickle.dumps(_Exploit(marker))
    weights = saved / WEIGHTS_FILE
    weights.write_bytes(payload)
    # Even with a matching digest the file must not be unpickled.
    meta_path = saved / METADATA_FILE
    metadata = json.loads(meta_path.read_text())
    import hashlib

    metadata["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    meta_path.write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(saved)
    assert not marker.exists()


def test_typed_metadata_and_the_one_temperature_fallback(tmp_path: Path) -> None:
    model = CVAE(preset("tiny"))
    save_checkpoint(tmp_path / "given", model, {}, default_temperature=0.0)
    info = load_checkpoint(tmp_path / "given").info
    assert isinstance(info, VersionMetadata)
    assert info.default_temperature == 0.0 and info.latent_dim == 4 and info.config == preset("tiny")
    written = save_checkpoint(tmp_path / "none", model, {})
    assert written["default_temperature"] == DEFAULT_TEMPERATURE == 1.0
    for recorded in (None, "hot", -1, 7.5, True):
        record = {**written, "default_temperature": recorded}
        assert VersionMetadata.from_record(record).default_temperature == DEFAULT_TEMPERATURE
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "bad", model, {}, default_temperature=9.0)
