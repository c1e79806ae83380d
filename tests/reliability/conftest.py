"""Fixtures of the reliability tests: real servers (`python -m app`) in the states they need.

The trained registry comes from tests/conftest.py and is copied before anything writes to it; servers are
started by tests/app/server.py. The figures the tests measure are printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.registry import Registry
from tests.app.conftest import add_perturbed_version
from tests.app.server import ServerProcess, start_server
from tests.reliability.faults import DAMAGES, plant
from tests.reliability.figures import FIGURES

ADMIN_TOKEN = "reliability-admin-token-0f3a"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BODY_TIMEOUT_S = 2.0  # short, so the slow-body test does not wait the default 30 s
FIGURES_ENV = "CVAE_RELIABILITY_FIGURES"


def copy_registry(source: Path, root: Path, *, second_version: bool = True) -> Registry:
    """A writable copy of a registry, plus a second valid version (not active) when asked."""
    shutil.copytree(source, root)
    registry = Registry(root)
    if second_version:
        active = registry.active_version()
        assert active is not None
        add_perturbed_version(registry, active)
    return registry


@contextlib.contextmanager
def serving(registry: Path, *, ready: bool = True, **settings: object) -> Iterator[ServerProcess]:
    """`start_server` for a block, yielding the process (its pid and log) and stopping it afterwards."""
    server = start_server(registry, ready=ready, **settings)
    try:
        yield server
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def two_versions(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained registry plus a perturbed v0002 (not active)."""
    return copy_registry(trained_registry, tmp_path_factory.mktemp("reliability") / "registry").root


@pytest.fixture(scope="session")
def main_server(two_versions: Path) -> Iterator[ServerProcess]:
    """A server with admin on and default limits, for the fuzzer and the security checks."""
    with serving(two_versions, admin_token=ADMIN_TOKEN, body_timeout_s=BODY_TIMEOUT_S) as server:
        yield server


@pytest.fixture(scope="session")
def faulty_registry(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """v0001 (active) and v0002 valid, then one broken version per damage of tests/reliability/faults.py."""
    registry = copy_registry(trained_registry, tmp_path_factory.mktemp("faulty") / "registry")
    active = registry.active_version()
    assert active is not None
    for damage in DAMAGES:
        plant(registry, active, damage)
    return registry


@pytest.fixture(scope="session")
def broken(faulty_registry: Registry) -> dict[str, str]:
    """Damage -> the name of the broken version planted with it."""
    return dict(zip(DAMAGES, faulty_registry.version_names()[2:], strict=True))


@pytest.fixture(scope="session")
def faulty_server(faulty_registry: Registry) -> Iterator[ServerProcess]:
    """A server with admin on over the registry holding broken versions."""
    with serving(faulty_registry.root, admin_token=ADMIN_TOKEN) as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the reliability tests measured (and write it as JSON to CVAE_RELIABILITY_FIGURES)."""
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
    target = os.environ.get(FIGURES_ENV)
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, default=str) + "\n")
