"""A stored config is checked against bounds and the weights' shapes before anything large is allocated."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import METADATA_FILE, WEIGHTS_FILE, load_checkpoint, read_tensor_shapes, save_checkpoint
from model.config import MAX_PARAMETERS, CVAEConfig
from model.errors import CheckpointError
from model.network import CVAE
from training.presets import preset


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(tmp_path, CVAE(preset("tiny")), extra={})
    return tmp_path


def with_config(directory: Path, **change: object) -> None:
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["config"].update(change)
    (directory / METADATA_FILE).write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    "change",
    [
        {"latent_dim": 1e13},
        {"latent_dim": 10**13},
        {"image_pixels": -1000},
        {"encoder_hidden": [20000, 20000]},
        {"decoder_hidden": [64] * 9},
        {"label_every_layer": "yes"},
        {"conv_channels": [64]},
    ],
)
def test_out_of_bounds_configs_are_refused_in_milliseconds(tiny: Path, change: dict) -> None:
    with_config(tiny, **change)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(tiny)
    assert time.perf_counter() - started < 0.5


def test_weights_that_do_not_fit_the_config_are_refused_before_loading(tiny: Path) -> None:
    with_config(tiny, latent_dim=8)  # within bounds, but the weights were saved for latent_dim 4
    with pytest.raises(CheckpointError, match="does not fit the stored config"):
        load_checkpoint(tiny)
    assert read_tensor_shapes(tiny / WEIGHTS_FILE)["fc_mu.weight"] == (4, 64)


def test_the_bound_admits_the_presets_and_refuses_a_huge_network() -> None:
    for name in ("tiny", "default", "reference"):
        assert preset(name).parameter_bound() < MAX_PARAMETERS
    with pytest.raises(ValueError, match="parameters"):
        CVAEConfig(encoder_hidden=(8192,) * 3, decoder_hidden=(8192,) * 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latent_dim": 0}, "latent_dim must be an integer from 1"),
        ({"latent_dim": -3}, "latent_dim must be an integer from 1"),
        ({"encoder_hidden": (64, 0)}, r"encoder_hidden\[1\] must be an integer from 1"),
        ({"decoder_hidden": (-1,)}, r"decoder_hidden\[0\] must be an integer from 1"),
        ({"conv_channels": (64,)}, "conv_channels must have two values"),
        ({"conv_channels": (64, 32, 16)}, "conv_channels must have two values"),
        ({"encoder_hidden": ()}, "both MLPs need at least one hidden layer"),
        ({"decoder_hidden": ()}, "both MLPs need at least one hidden layer"),
        ({"encoder": "transformer"}, "'mlp' or 'conv'"),
        ({"decoder": "rnn", "conv_channels": (16, 8)}, "'mlp' or 'conv'"),
    ],
)
def test_every_bad_config_is_a_value_error(change: dict, message: str) -> None:
    """Sizes, widths and conv_channels fail the bounds check; empty MLPs and unknown kinds fail later."""
    with pytest.raises(ValueError, match=message):
        CVAEConfig(**change)
    with pytest.raises(CheckpointError, match="config is invalid"):  # the same, read from a checkpoint
        CVAEConfig.from_dict({**CVAEConfig().to_dict(), **change})
