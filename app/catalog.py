"""The registry's versions as `/v1/models` lists them: metadata read once and re-read only on change.

Versions are immutable, so a version's metadata is parsed once and kept, keyed by the stat of its
`metadata.json` (inode, mtime, size): a listing costs one directory scan and one stat per version, not
a JSON parse of every version's metadata. A new, removed or rewritten version is seen at the next
listing. `summary` leaves out the bulky per-epoch `history` unless the caller asks for it. The methods
do file I/O: call them on a worker thread (they are thread-safe).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from model.checkpoint import METADATA_FILE, read_metadata
from model.errors import CheckpointError
from model.registry import Registry, VersionInfo

BULKY_FIELDS = ("history",)  # per-epoch lists: most of a metadata.json's size

_Stamp = tuple[int, int, int] | None


class VersionCatalog:
    """Every registry version with its metadata, from a cache invalidated by the files' stats."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[_Stamp, VersionInfo]] = {}

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first; an unreadable one with its error."""
        with self._lock:
            names = self.registry.version_names()
            fresh: dict[str, tuple[_Stamp, VersionInfo]] = {}
            for name in names:
                stamp = _stamp(self.registry.root / name / METADATA_FILE)
                cached = self._cache.get(name)
                fresh[name] = cached if cached and cached[0] == stamp and stamp else (stamp, self._read(name))
            self._cache = fresh
            return [fresh[name][1] for name in names]

    def _read(self, name: str) -> VersionInfo:
        path = self.registry.root / name
        try:
            return VersionInfo(name, path, read_metadata(path))
        except CheckpointError as exc:
            return VersionInfo(name, path, None, str(exc))


def summary(metadata: dict[str, Any] | None, full: bool) -> dict[str, Any] | None:
    """The metadata as listed: without the bulky fields unless `full`."""
    if metadata is None or full:
        return metadata
    return {key: value for key, value in metadata.items() if key not in BULKY_FIELDS}


def _stamp(path: os.PathLike[str]) -> _Stamp:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
