"""Fixtures shared by every test package: a small model trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders.models import train_tiny


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose active version is a tiny CVAE trained briefly on the bundled digits.
    Tests must not modify it: copy it (shutil.copytree) when they need to write."""
    root = tmp_path_factory.mktemp("registry")
    train_tiny(root)
    return root
