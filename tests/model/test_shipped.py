"""The shipped pretrained model: it loads and verifies, records how to reproduce it, and seeds an
empty registry (and only an empty one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint, sha256_file
from model.errors import CheckpointError
from model.registry import Registry
from model.shipped import PRETRAINED_DIR, main, seed_registry
from tests.builders.models import make_random_registry
from training.presets import PRESETS


def test_the_shipped_checkpoint_loads_verifies_and_says_how_it_was_made() -> None:
    checkpoint = load_checkpoint(PRETRAINED_DIR)
    assert checkpoint.model.config == PRESETS["mnist"].network
    metadata = checkpoint.metadata
    shipped = metadata["shipped"]
    assert "torchrun" in shipped["command"] and "--preset mnist" in shipped["command"]
    assert shipped["data_fingerprint"] == metadata["data"]["fingerprint"] and shipped["seed"] == 0
    assert metadata["training"]["epochs"] == PRESETS["mnist"].recipe.epochs  # the preset reproduces it
    assert metadata["data"]["train_examples"] + metadata["data"]["val_examples"] == 60_000
    assert metadata["data"]["test_examples"] == 10_000 and metadata["metrics"]["evaluated_on"] == "test"
    assert 0 < checkpoint.info.default_temperature <= 1
    for name in ("samples.png", "training.png"):
        assert (PRETRAINED_DIR / name).read_bytes().startswith(b"\x89PNG")
    with torch.no_grad():
        probs = checkpoint.model.decode(torch.zeros(2, checkpoint.info.latent_dim), torch.tensor([3, 7]))
    assert probs.shape == (2, 784) and float(probs.min()) >= 0 and float(probs.max()) <= 1


def test_an_empty_registry_is_seeded_with_the_shipped_version_active(tmp_path: Path, capsys) -> None:
    assert main(["--registry", str(tmp_path / "registry")]) == 0
    assert "v0001, active" in capsys.readouterr().out
    registry = Registry(tmp_path / "registry")
    assert registry.version_names() == ["v0001"] and registry.active_version() == "v0001"
    assert sha256_file(registry.path() / "model.safetensors") == sha256_file(
        PRETRAINED_DIR / "model.safetensors"
    )
    assert registry.load().metadata["shipped"] == load_checkpoint(PRETRAINED_DIR).metadata["shipped"]
    assert {p.name for p in registry.path().iterdir()} >= {
        "model.safetensors",
        "metadata.json",
        "samples.png",
    }


def test_a_registry_with_versions_is_left_alone(tmp_path: Path, capsys) -> None:
    registry = make_random_registry(tmp_path / "registry", versions=1)
    before = sorted(p.name for p in registry.root.iterdir())
    assert seed_registry(registry) is None
    assert main(["--registry", str(registry.root)]) == 0
    out = capsys.readouterr().out
    assert "not added" in out and "promote" not in out
    assert sorted(p.name for p in registry.root.iterdir()) == before


def test_versions_with_none_active_are_left_alone_with_a_hint(tmp_path: Path, capsys) -> None:
    registry = make_random_registry(tmp_path / "registry", versions=1)
    (registry.root / "active").unlink()
    assert main(["--registry", str(registry.root)]) == 0
    out = capsys.readouterr().out
    assert "not added" in out and "python -m model promote VERSION" in out
    assert registry.version_names() == ["v0001"] and registry.active_version() is None


def test_a_corrupt_shipped_copy_is_refused_and_nothing_is_published(tmp_path: Path) -> None:
    source = tmp_path / "shipped"
    shutil.copytree(PRETRAINED_DIR, source)
    data = bytearray((source / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (source / "model.safetensors").write_bytes(bytes(data))
    registry = Registry(tmp_path / "registry")
    with pytest.raises(CheckpointError, match="corrupt"):
        seed_registry(registry, source)
    assert registry.version_names() == [] and not list(registry.root.glob(".staging-*"))
