"""Fixtures of the service tests: a two-version registry, one shared real server, real MNIST digits.

`trained_registry` (a tiny CVAE trained once per session, active) comes from tests/conftest.py; it is
copied here before anything writes to it. Builders live in tests/builders/, servers are started by
loadtest.server.start_server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtest.server import start_server
from model.registry import Registry
from tests.builders.models import copy_registry, make_random_registry
from tests.builders.servers import ADMIN_TOKEN
from training.data import load_bundled


@pytest.fixture
def random_registry(tmp_path: Path) -> Registry:
    """Two untrained tiny versions, v0001 active."""
    return make_random_registry(tmp_path / "registry", versions=2)


@pytest.fixture(scope="session")
def serving_registry(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained registry with a second version (v0002, not active)."""
    return copy_registry(trained_registry, tmp_path_factory.mktemp("serving") / "registry").root


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
    with start_server(serving_registry, admin_token=ADMIN_TOKEN) as started:
        yield started.base_url


@pytest.fixture(scope="session")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The first 200 bundled MNIST digits (uint8 (N, 28, 28), white on black) and their labels."""
    data = load_bundled()
    return data.images[:200], data.labels[:200]
