"""The registry: monotonic immutable versions, atomic publish and promote, survival of killed writers."""

import errno
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import save_checkpoint
from model.errors import CheckpointError, RegistryError, RegistryReadOnly, VersionNotFoundError
from model.network import CVAE
from model.registry import Registry
from training.presets import preset

REPO = Path(__file__).resolve().parents[2]


def _write_version(registry: Registry, seed: int = 0) -> str:
    torch.manual_seed(seed)
    with registry.staging() as staging:
        save_checkpoint(staging, CVAE(preset("tiny")), {"seed": seed})
        return registry.publish(staging)


def test_versions_are_monotonic_and_listed_with_metadata(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    assert registry.version_names() == [] and registry.active_version() is None
    names = [_write_version(registry, seed) for seed in range(3)]
    assert names == ["v0001", "v0002", "v0003"]
    infos = registry.versions()
    assert [i.name for i in infos] == names
    assert [i.metadata["seed"] for i in infos] == [0, 1, 2]


def test_promote_resolve_and_load(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    first, second = _write_version(registry, 0), _write_version(registry, 1)
    with pytest.raises(RegistryError, match="no active version"):
        registry.resolve()
    registry.promote(second)
    assert registry.active_version() == second == registry.resolve()
    assert registry.load().metadata["seed"] == 1
    assert registry.load(first).metadata["seed"] == 0
    with pytest.raises(VersionNotFoundError):
        registry.load("v9999")
    with pytest.raises(VersionNotFoundError):
        registry.promote("../etc")
    assert registry.active_version() == second


def test_a_pointer_that_cannot_be_written_is_a_clear_error_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path)
    first, second = _write_version(registry, 0), _write_version(registry, 1)
    registry.promote(first)

    def read_only(*args: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(RegistryReadOnly, match=r"active pointer .*\(Read-only file system\)"):
        registry.promote(second)
    assert registry.active_version() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["active", first, second]  # no temporary left


def test_failed_staging_leaves_nothing_visible(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    with pytest.raises(RuntimeError), registry.staging() as staging:
        (staging / "partial").write_text("half")
        raise RuntimeError("crash while writing")
    assert registry.version_names() == []
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_version_is_listed_with_its_error_and_refused_on_load(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    name = _write_version(registry)
    (tmp_path / name / "model.safetensors").write_bytes(b"garbage")
    assert registry.versions()[0].metadata is not None
    with pytest.raises(CheckpointError):
        registry.load(name)
    (tmp_path / name / "metadata.json").write_text("{")
    assert registry.versions()[0].error is not None


def test_a_dangling_active_pointer_is_a_registry_error(tmp_path: Path) -> None:
    (tmp_path / "active").write_text("v0042\n")
    with pytest.raises(RegistryError, match="not a version"):
        Registry(tmp_path).active_version()


def test_clean_staging_removes_only_old_leftovers(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    old, new = tmp_path / ".staging-old", tmp_path / ".staging-new"
    old.mkdir(), new.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert registry.clean_staging(older_than_s=3600) == [old]
    assert new.exists() and not old.exists()


WRITER = textwrap.dedent(
    """
    import sys
    from training.config import preset_job
    from training.job import run
    run(preset_job("tiny", registry=sys.argv[1], epochs=30, max_examples=2000, evaluate=False,
                   progress=False, patience=100))
    """
)


def test_training_killed_at_random_points_never_corrupts_the_registry(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    baseline = _write_version(registry)
    registry.promote(baseline)
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(4):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env, cwd=REPO)
        time.sleep(rng.uniform(0.5, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        # The pointer names a complete version: the baseline, or a run that finished before the kill.
        active = registry.active_version()
        assert active in registry.version_names()
        for name in registry.version_names():  # every visible version is complete and loadable
            registry.load(name)
    assert registry.load(baseline).metadata["seed"] == 0


def test_a_writer_removes_staging_left_by_a_dead_process_on_this_host(tmp_path: Path) -> None:
    Registry(tmp_path).root.mkdir(exist_ok=True)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = socket.gethostname()
    dead = tmp_path / f".staging-{host}-{int(gone.stdout)}-abc"
    mine = tmp_path / f".staging-{host}-{os.getpid()}-def"
    elsewhere = tmp_path / ".staging-otherhost-1-0123"
    for path in (dead, mine, elsewhere):
        path.mkdir()
    Registry(tmp_path)  # a reader cleans nothing
    assert dead.exists()
    Registry(tmp_path, writer=True)
    assert not dead.exists() and mine.exists() and elsewhere.exists()


def test_published_files_are_readable_by_other_users(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        registry = Registry(tmp_path)
        name = _write_version(registry)
    finally:
        os.umask(old_umask)
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o755
    for path in (tmp_path / name).iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_an_artifact_is_published_and_replaced_whole(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for content in ("first", "second"):
        with registry.staging() as staging:
            (staging / "file.txt").write_text(content)
            target = registry.publish_artifact(staging, "classifier/key")
    assert target == tmp_path / "classifier" / "key" and (target / "file.txt").read_text() == "second"
    assert registry.version_names() == [] and not list(tmp_path.glob(".staging-*"))
    for bad in ("v0001", "../x", ".staging-1"):
        with pytest.raises(RegistryError):
            registry.artifact_path(bad)


def test_a_registry_root_that_is_a_file_lists_no_versions(tmp_path: Path) -> None:
    """A misconfigured root (a file) is an empty registry for the listing and its cache, not an error."""
    from app.catalog import VersionCatalog

    root = tmp_path / "registry"
    root.write_text("not a directory")
    registry = Registry(root)
    assert registry.version_names() == []
    assert VersionCatalog(registry).refresh() == []
