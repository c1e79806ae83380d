"""The locks of exact versions (requirements/*.txt): they agree with pyproject.toml, and this environment
was installed from the dev lock (as `make test` and CI install it)."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from scripts import lock
from tests.builders.tools import REPO


def test_the_locks_agree_with_pyproject() -> None:
    assert lock.check() == [], "run `make lock` after changing pyproject.toml's dependencies"


def copies(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(REPO / "requirements", tmp_path / "requirements")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path / "requirements", tmp_path / "pyproject.toml"


def test_a_dependency_added_without_a_new_lock_fails_the_check(tmp_path: Path) -> None:
    locks, pyproject = copies(tmp_path)
    text = pyproject.read_text().replace('"numpy>=1.26",', '"numpy>=1.26",\n    "rich>=13",', 1)
    pyproject.write_text(text)
    problems = lock.check(locks, pyproject)
    assert any("other pyproject.toml dependencies" in p for p in problems)
    assert any("no pin for rich>=13" in p for p in problems)


def test_a_pin_outside_pyproject_fails_the_check(tmp_path: Path) -> None:
    locks, pyproject = copies(tmp_path)
    service = locks / "service.txt"
    version = lock.pins(service)["fastapi"]
    service.write_text(service.read_text().replace(f"fastapi=={version}", "fastapi==0.1.0"))
    assert lock.check(locks, pyproject) == ["service.txt pins fastapi==0.1.0, outside fastapi>=0.110"]


def test_the_service_and_load_locks_agree_with_the_dev_lock() -> None:
    dev = lock.pins(REPO / "requirements" / "dev.txt")
    for name in ("service", "load"):
        pinned = lock.pins(REPO / "requirements" / f"{name}.txt")
        assert {k: dev.get(k) for k in pinned} == pinned, name


@pytest.mark.parametrize("name", ["service", "dev"])
def test_this_environment_has_exactly_the_locked_versions(name: str) -> None:
    pinned = lock.pins(REPO / "requirements" / f"{name}.txt")
    installed = {k: importlib.metadata.version(k) for k in pinned}
    assert installed == pinned
    torch = (REPO / "requirements" / "torch.txt").read_text().split("==")[1].strip()
    assert importlib.metadata.version("torch").split("+")[0] == torch
