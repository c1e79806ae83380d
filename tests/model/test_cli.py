"""`python -m model`: listing the registry's versions and promoting one (only one whose checkpoint loads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.__main__ import main
from model.registry import Registry
from tests.builders.faults import marker_path, plant
from tests.builders.models import make_random_registry


def test_list_marks_the_active_version_and_shows_an_unreadable_one(tmp_path: Path, capsys) -> None:
    registry = make_random_registry(tmp_path / "registry", versions=2)
    broken = plant(registry, "v0001", "bad-metadata")
    assert main(["--registry", str(registry.root), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"registry {registry.root}: 3 version(s), active: v0001"
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in lines[2:]}
    assert rows["v0001"].startswith("*") and not rows["v0002"].startswith("*")
    assert "unreadable:" in rows[broken]


def test_promote_switches_the_active_pointer(tmp_path: Path, capsys) -> None:
    registry = make_random_registry(tmp_path / "registry", versions=2)
    assert main(["promote", "v0002", "--registry", str(registry.root)]) == 0  # --registry after the command
    assert "v0002 is active (was v0001)" in capsys.readouterr().out
    assert Registry(registry.root).active_version() == "v0002"


@pytest.mark.parametrize("damage", ["bit-flip", "pickle", "no-weights"])
def test_promote_refuses_a_version_that_does_not_load(tmp_path: Path, capsys, damage: str) -> None:
    registry = make_random_registry(tmp_path / "registry", versions=1)
    broken = plant(registry, "v0001", damage)
    assert main(["--registry", str(registry.root), "promote", broken]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert registry.active_version() == "v0001"
    assert not marker_path(registry).exists()  # nothing was unpickled


def test_unknown_versions_and_registries_exit_2_and_change_nothing(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = make_random_registry(tmp_path / "registry", versions=1)
    monkeypatch.setenv("CVAE_REGISTRY", str(registry.root))  # the default, as the service's
    assert main(["promote", "v0009"]) == 2
    assert "unknown model version 'v0009'" in capsys.readouterr().err
    assert main(["promote", "../v0001"]) == 2
    assert registry.active_version() == "v0001"
    assert main(["--registry", str(tmp_path / "missing"), "list"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_a_broken_active_pointer_is_shown_and_promote_repairs_it(tmp_path: Path, capsys) -> None:
    registry = make_random_registry(tmp_path / "registry", versions=1)
    (registry.root / "active").write_text("v0042\n")
    assert main(["--registry", str(registry.root), "list"]) == 0
    assert "active: none (the active pointer names 'v0042'" in capsys.readouterr().out
    assert main(["--registry", str(registry.root), "promote", "v0001"]) == 0
    assert registry.active_version() == "v0001"
