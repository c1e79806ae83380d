"""Models and registries built for the tests: a briefly trained tiny CVAE, untrained ones, copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.network import CVAE
from model.registry import Registry
from training.config import preset_job
from training.job import JobResult, run
from training.presets import preset


def train_tiny(registry: Path, **overrides: Any) -> JobResult:
    """A few-second training run of the tiny preset into `registry` (promoted)."""
    settings: dict[str, Any] = dict(
        registry=registry,
        epochs=4,
        max_examples=3000,
        evaluate=False,
        progress=False,
        patience=100,
    )
    settings.update(overrides)
    return run(preset_job("tiny", **settings))


def make_random_registry(root: Path, versions: int = 1, seed: int = 0) -> Registry:
    """A registry of untrained tiny CVAEs (fixed seeds), the first one active: for fast unit tests."""
    registry = Registry(root)
    for i in range(versions):
        torch.manual_seed(seed + i)
        with registry.staging() as staging:
            save_checkpoint(staging, CVAE(preset("tiny")), extra={"default_temperature": 0.5})
        name = registry.publish(staging)
        if i == 0:
            registry.promote(name)
    return registry


def add_perturbed_version(registry: Registry, source: str) -> str:
    """Publish a copy of `source` with weights scaled by 1.05 (a distinct, valid version)."""
    checkpoint = load_checkpoint(registry.path(source))
    with torch.no_grad():
        for parameter in checkpoint.model.parameters():
            parameter.mul_(1.05)
    keep = {
        k: v
        for k, v in checkpoint.metadata.items()
        if k not in ("config", "weights_sha256", "format_version")
    }
    with registry.staging() as staging:
        save_checkpoint(staging, checkpoint.model, extra={**keep, "derived_from": source})
        shutil.copy(registry.path(source) / "samples.png", staging / "samples.png")
    return registry.publish(staging)


def copy_registry(source: Path, root: Path, *, second_version: bool = True) -> Registry:
    """A writable copy of a registry, plus a second valid version (not active) when asked."""
    shutil.copytree(source, root)
    registry = Registry(root)
    if second_version:
        active = registry.active_version()
        assert active is not None
        add_perturbed_version(registry, active)
    return registry


def add_listed_versions(registry: Registry, count: int, history_epochs: int = 150) -> list[str]:
    """`count` more versions holding only a copy of the active version's metadata.json with a
    `history` of `history_epochs` epochs (what a default training run stores, ~40 KB): enough for
    listings (`/v1/models`), not loadable."""
    active = registry.active_version()
    assert active is not None
    metadata = json.loads((registry.path(active) / "metadata.json").read_text())
    epoch = {k: 123.456789 for k in ("loss", "recon", "kl", "val_neg_elbo", "val_recon", "val_kl", "lr")}
    metadata["history"] = [{"epoch": i, **epoch} for i in range(history_epochs)]
    names = []
    for _ in range(count):
        name = registry.next_version_name()
        (registry.root / name).mkdir()
        (registry.root / name / "metadata.json").write_text(json.dumps(metadata))
        names.append(name)
    return names
