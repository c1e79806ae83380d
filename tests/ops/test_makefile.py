"""The Makefile's install order (the locks) and idempotence, and .ci/run running exactly `make test`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders.tools import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def make(*args: str, venv: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(
        ["make", f"VENV={venv}", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )


def dry_run(target: str, venv: Path, *args: str) -> list[str]:
    """The commands `make -n -B target` would run (every step, as on a fresh clone)."""
    result = make("-n", "-B", target, *args, venv=venv)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def index(lines: list[str], fragment: str) -> int:
    return next(i for i, line in enumerate(lines) if fragment in line)


def test_serve_installs_torch_first_then_seeds_if_empty_then_serves(tmp_path: Path) -> None:
    lines = dry_run("serve", tmp_path / "venv")
    steps = [
        index(lines, "-m venv"),
        index(lines, "install --quiet -c requirements/service.txt -r requirements/torch.txt"),
        index(lines, "install --quiet --no-deps -r requirements/service.txt"),
        index(lines, "install --quiet --no-deps --no-build-isolation -e ."),
        index(lines, "pip-version-check check"),
        index(lines, "-m model.shipped --registry"),
        index(lines, "-m app"),
    ]
    assert steps == sorted(steps)
    assert not any("-m training" in line for line in lines)  # a fresh clone serves without training


def test_train_trains_a_new_version_from_the_bundled_sample(tmp_path: Path) -> None:
    lines = dry_run("train", tmp_path / "venv")
    train = lines[index(lines, "-m training --registry")]
    assert "--if-empty" not in train and "--data" not in train and "--preset" not in train


def test_test_target_installs_the_dev_lock_after_torch_and_runs_all_tests(tmp_path: Path) -> None:
    lines = dry_run("test", tmp_path / "venv")
    torch = index(lines, "-c requirements/dev.txt -r requirements/torch.txt")
    lock = index(lines, "--no-deps -r requirements/dev.txt")
    assert torch < lock < index(lines, "pip-version-check check") < index(lines, "-m pytest tests")
    lint = [index(lines, fragment) for fragment in ("-m ruff check .", "-m ruff format --check .", "-m mypy")]
    assert max(lint) < index(lines, "-m pytest tests")  # lint runs on every `make test`, before the suite
    assert any("chromium" in line for line in lines) and any("prometheus" in line for line in lines)
    assert any("haproxy" in line for line in lines)


def test_loadtest_target_passes_duration_and_users(tmp_path: Path) -> None:
    lines = dry_run("loadtest", tmp_path / "venv", "DURATION=20", "USERS=8")
    assert '-m loadtest --duration "20" --users "8"' in lines[-1]


def test_installs_are_stamped_and_keyed_on_pyproject_and_the_locks(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    stamps = venv / ".stamps"
    stamps.mkdir()
    files = [REPO / "pyproject.toml", *sorted((REPO / "requirements").glob("*.txt"))]
    joined = b"".join(path.read_bytes() for path in files)
    key = subprocess.run(["cksum"], input=joined, capture_output=True, check=True).stdout.split()[0].decode()
    (stamps / "service-stale").touch()
    assert make("-q", "install", venv=venv).returncode == 1, "a changed pyproject.toml or lock reinstalls"
    (stamps / f"service-{key}").touch()
    assert make("-q", "install", venv=venv).returncode == 0, "nothing to do when the stamps are current"


def test_help_lists_the_main_targets(tmp_path: Path) -> None:
    result = make("help", venv=tmp_path / "venv")
    for target in ("serve", "test", "loadtest", "lint", "bench", "container-smoke", "clean"):
        assert f"\n{target} " in "\n" + result.stdout, target


def test_ci_runs_exactly_the_readme_test_command() -> None:
    script = (REPO / ".ci" / "run").read_text().splitlines()
    assert script[0] == "#!/usr/bin/env bash"
    commands = [line.strip() for line in script[1:] if line.strip() and not line.lstrip().startswith("#")]
    assert commands[0] == "set -euo pipefail"
    assert commands[-1] == "make test"
    assert subprocess.run(["bash", "-n", str(REPO / ".ci" / "run")]).returncode == 0


@pytest.mark.parametrize("script", ["container_smoke.sh", "device_bundle.sh", "device_check.sh"])
def test_the_shell_scripts_parse(script: str) -> None:
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / script)]).returncode == 0
