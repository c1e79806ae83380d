"""Fixtures of the reliability tests: real servers (`python -m app`) in the states they need.

The trained registry comes from tests/conftest.py and is copied before anything writes to it; servers are
started by loadtest.server.start_server, builders come from tests/builders/. The figures the tests measure
are printed at the end of the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.server import ServerProcess, start_server
from model.registry import Registry
from tests.builders.faults import DAMAGES, plant
from tests.builders.figures import FIGURES
from tests.builders.models import add_listed_versions, copy_registry
from tests.builders.servers import ADMIN_TOKEN, BODY_TIMEOUT_S

FIGURES_ENV = "CVAE_RELIABILITY_FIGURES"


@pytest.fixture(scope="session")
def two_versions(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained registry plus a perturbed v0002 (not active)."""
    return copy_registry(trained_registry, tmp_path_factory.mktemp("reliability") / "registry").root


@pytest.fixture(scope="session")
def main_server(two_versions: Path) -> Iterator[ServerProcess]:
    """A server with admin on and default limits, for the fuzzer and the security checks."""
    with start_server(two_versions, admin_token=ADMIN_TOKEN, body_timeout_s=BODY_TIMEOUT_S) as server:
        yield server


@pytest.fixture(scope="session")
def many_versions(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained registry plus 213 listed versions with a default run's metadata (~40 KB each)."""
    registry = copy_registry(trained_registry, tmp_path_factory.mktemp("many") / "registry")
    add_listed_versions(registry, 211)
    return registry.root


@pytest.fixture(scope="session")
def faulty_registry(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """v0001 (active) and v0002 valid, then one broken version per damage of tests/builders/faults.py."""
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
    with start_server(faulty_registry.root, admin_token=ADMIN_TOKEN) as server:
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
