"""Fixtures of the service tests: a two-version registry, one shared real server, real MNIST digits.

`trained_registry` (a tiny CVAE trained once per session, active) comes from tests/conftest.py; it is
copied here before anything writes to it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.network import CVAE
from model.registry import Registry
from tests.app.server import running_server
from training.data import load_bundled
from training.presets import preset

ADMIN_TOKEN = "test-admin-token"


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


@pytest.fixture
def random_registry(tmp_path: Path) -> Registry:
    """Two untrained tiny versions, v0001 active."""
    return make_random_registry(tmp_path / "registry", versions=2)


@pytest.fixture(scope="session")
def serving_registry(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained registry with a second version (v0002, not active)."""
    root = tmp_path_factory.mktemp("serving") / "registry"
    shutil.copytree(trained_registry, root)
    registry = Registry(root)
    active = registry.active_version()
    assert active is not None
    add_perturbed_version(registry, active)
    return root


@pytest.fixture(scope="session")
def active_version(serving_registry: Path) -> str:
    version = Registry(serving_registry).active_version()
    assert version is not None
    return version


@pytest.fixture(scope="session")
def other_version(serving_registry: Path, active_version: str) -> str:
    return next(v for v in Registry(serving_registry).version_names() if v != active_version)


@pytest.fixture(scope="session")
def server(serving_registry: Path) -> Iterator[str]:
    """One real server for the session's end-to-end tests (admin on, default batching)."""
    with running_server(serving_registry, admin_token=ADMIN_TOKEN) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The first 200 bundled MNIST digits (uint8 (N, 28, 28), white on black) and their labels."""
    data = load_bundled()
    return data.images[:200], data.labels[:200]
