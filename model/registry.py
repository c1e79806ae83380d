"""The registry of model versions: a directory of immutable, monotonically named versions.

Layout::

    <root>/v0001/            model.safetensors, metadata.json, samples.png, training.png, ...
    <root>/v0002/
    <root>/active            text file naming the active version, replaced atomically
    <root>/classifier/<key>/ an artifact that is not a version (the evaluation judge), same format
    <root>/.staging-<host>-<pid>-<id>/   something being written; never listed, renamed into place

A version or artifact becomes visible only by a directory rename after all its files are written
and fsynced, and `active` changes only by writing a temporary file and renaming it over the old
one, so a writer killed at any point leaves the registry as it was (plus, at worst, a hidden
staging directory, which the next writer removes). Published files are world-readable (0644 files,
0755 directories), so a reader running as another user can load what a trainer wrote.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import Checkpoint, VersionMetadata, load_checkpoint, read_metadata
from model.errors import CheckpointError, RegistryError, RegistryReadOnly, VersionNotFoundError

# ASCII digits only (`\d` would take any script's digits) and a bounded length: a name is checked
# against this before it touches the filesystem.
VERSION_PATTERN = re.compile(r"^v([0-9]{4,12})$")
ACTIVE_FILE = "active"
STAGING_PREFIX = ".staging-"
# A staging directory of a writer on another host (or in another PID namespace) is only known to be
# abandoned by its age: no single run takes this long.
STALE_STAGING_S = 24 * 3600.0
FILE_MODE, DIR_MODE = 0o644, 0o755
DEFAULT_ROOT = "./registry"


def default_registry() -> Path:
    """The registry path the service, the training job and `python -m model` share: $CVAE_REGISTRY, else
    ./registry."""
    return Path(os.environ.get("CVAE_REGISTRY", DEFAULT_ROOT))


@dataclass(frozen=True)
class VersionInfo:
    """One version as listed: its name, directory, metadata as written and typed (None if unreadable)."""

    name: str
    path: Path
    metadata: dict[str, Any] | None
    error: str | None = None
    info: VersionMetadata | None = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _make_readable(directory: Path) -> None:
    """0644 files and 0755 directories under `directory` (and itself), whatever the umask was."""
    directory.chmod(DIR_MODE)
    for path in directory.rglob("*"):
        path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)


class Registry:
    """Versions under one root directory. `writer=True` (a trainer) removes the staging directories
    that killed writers left behind when it opens the registry."""

    def __init__(self, root: Path | str, *, writer: bool = False):
        self.root = Path(root)
        if writer:
            self.clean_staging()

    # -- reading -----------------------------------------------------------------------------
    def version_names(self) -> list[str]:
        """Names of the complete versions, oldest first."""
        if not self.root.is_dir():
            return []
        with os.scandir(self.root) as scan:
            # a symlink (which could point anywhere) is no version: DirEntry knows without a stat
            names = [
                e.name for e in scan if VERSION_PATTERN.match(e.name) and e.is_dir(follow_symlinks=False)
            ]
        return sorted(names, key=lambda n: int(n[1:]))

    def _is_version(self, name: str) -> bool:
        """A real directory directly in the root: a symlink (which could point anywhere) is no version."""
        path = self.root / name
        return not path.is_symlink() and path.is_dir()

    def versions(self) -> list[VersionInfo]:
        """Every version with its metadata; an unreadable one is listed with its error."""
        return [self.version_info(name) for name in self.version_names()]

    def version_info(self, name: str) -> VersionInfo:
        """One listed version with its metadata as written and typed, or the error reading it."""
        path = self.root / name
        try:
            record = read_metadata(path)
            return VersionInfo(name, path, record, info=VersionMetadata.from_record(record))
        except CheckpointError as exc:
            return VersionInfo(name, path, None, str(exc))

    def active_version(self) -> str | None:
        """The active version's name, or None when nothing was promoted yet."""
        try:
            raw = (self.root / ACTIVE_FILE).read_bytes()[:64]
        except FileNotFoundError:
            return None
        except OSError as exc:  # a directory, unreadable...
            raise RegistryError(f"the active pointer cannot be read: {exc.strerror or exc}") from exc
        name = raw.decode("ascii", errors="replace").strip()
        if not VERSION_PATTERN.match(name) or not self._is_version(name):
            raise RegistryError(f"the active pointer names {name[:32]!r}, which is not a version here")
        return name

    def active_or_why(self) -> tuple[str | None, str | None]:
        """(the active version, None), or (None, why the pointer names no version); (None, None) when
        nothing was promoted yet. For reports that show a broken pointer rather than raise."""
        try:
            return self.active_version(), None
        except RegistryError as exc:
            return None, str(exc)

    def resolve(self, version: str | None = None) -> str:
        """The given version's name after checking it exists, or the active one when None."""
        if version is None:
            active = self.active_version()
            if active is None:
                raise RegistryError(f"no active version in registry {self.root}; train one first")
            return active
        if not VERSION_PATTERN.match(version) or not self._is_version(version):
            raise VersionNotFoundError(f"unknown model version {version[:32]!r}")
        return version

    def path(self, version: str | None = None) -> Path:
        """Directory of a version (the active one when None)."""
        return self.root / self.resolve(version)

    def artifact(self, version: str, name: str) -> Path:
        """A regular file saved beside a version's weights (VersionNotFoundError when absent); a symlink
        or anything resolving outside the version's directory is refused, so only registry files are
        ever read through it."""
        directory = self.path(version)
        path = directory / name
        if path.is_symlink() or not path.is_file() or path.resolve().parent != directory.resolve():
            raise VersionNotFoundError(f"version {version} has no {name}")
        return path

    def load(self, version: str | None = None, device: torch.device | str = "cpu") -> Checkpoint:
        """Load a version (the active one when None) onto a device."""
        return load_checkpoint(self.root / self.resolve(version), device)

    # -- writing -----------------------------------------------------------------------------
    def promote(self, version: str) -> None:
        """Make `version` the active one, atomically; RegistryReadOnly (pointer unchanged) when the
        registry cannot be written from here."""
        name = self.resolve(version)
        tmp = self.root / f".{ACTIVE_FILE}-{uuid.uuid4().hex}"
        try:
            with tmp.open("w", encoding="utf-8") as handle:
                handle.write(name + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.root / ACTIVE_FILE)
        except OSError as exc:
            with contextlib.suppress(OSError):  # on a read-only mount even this fails
                tmp.unlink()
            raise RegistryReadOnly(
                f"cannot write the active pointer of registry {self.root} ({exc.strerror or exc}); promote "
                "where the registry is writable"
            ) from exc
        _fsync_dir(self.root)

    def next_version_name(self) -> str:
        """The name the next published version would get."""
        names = self.version_names()
        number = int(names[-1][1:]) + 1 if names else 1
        return f"v{number:04d}"

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A hidden directory to write a new version into; removed if the block fails."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
        path.mkdir()
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def publish(self, staging: Path) -> str:
        """Rename a complete staging directory to the next version name; returns that name."""
        _make_readable(staging)
        for _ in range(100):
            name = self.next_version_name()
            try:
                os.rename(staging, self.root / name)
            except OSError:  # another writer took this name first (target exists and is not empty)
                continue
            _fsync_dir(self.root)
            return name
        raise RegistryError(f"could not publish {staging} after 100 attempts")

    def import_version(self, source: Path) -> str:
        """Publish a copy of a version directory written elsewhere (e.g. the shipped pretrained model)
        as the next version, after verifying its weights against its metadata; returns its name."""
        load_checkpoint(source)  # CheckpointError when it is incomplete or corrupt
        with self.staging() as staging:
            for path in source.iterdir():
                if path.is_file():
                    shutil.copyfile(path, staging / path.name)
            load_checkpoint(staging)  # the copy, too
            return self.publish(staging)

    def artifact_path(self, name: str) -> Path:
        """Directory of a named artifact that is not a version, e.g. `classifier/<key>`."""
        if VERSION_PATTERN.match(name.split("/")[0]) or name.startswith(".") or ".." in name.split("/"):
            raise RegistryError(f"{name!r} is not an artifact name")
        return self.root / name

    def publish_artifact(self, staging: Path, name: str) -> Path:
        """Put a complete staging directory at `artifact_path(name)` by renames, replacing what was
        there (an unreadable earlier copy): readers see the old copy or the new one, never a part."""
        target = self.artifact_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        _make_readable(staging)
        if target.exists():
            retired = self.root / f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
            os.rename(target, retired)
            shutil.rmtree(retired, ignore_errors=True)
        os.rename(staging, target)
        _fsync_dir(target.parent)
        return target

    def clean_staging(self, older_than_s: float = STALE_STAGING_S) -> list[Path]:
        """Remove staging directories left by killed writers: those of a dead process on this host,
        and any older than `older_than_s`. Returns what was removed."""
        removed: list[Path] = []
        now = time.time()
        if not self.root.is_dir():
            return removed
        host = socket.gethostname()
        for path in self.root.glob(f"{STAGING_PREFIX}*"):
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:  # its writer just published or removed it
                continue
            if age > older_than_s or self._abandoned_here(path.name[len(STAGING_PREFIX) :], host):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    @staticmethod
    def _abandoned_here(tag: str, host: str) -> bool:
        """Whether a staging tag `<host>-<pid>-<id>` names a process of this host that is gone."""
        head = tag.rpartition("-")[0]  # drop the random id
        writer_host, _, pid = head.rpartition("-")
        return writer_host == host and pid.isdigit() and not _pid_alive(int(pid))
