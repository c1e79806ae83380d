"""The registry's versions as `/v1/models` lists them: metadata read once and re-read only on change.

Versions are immutable and appear or disappear only by a rename in the registry's root, so the listing
is cached and trusted while the root directory's stat (inode, mtime) is unchanged: checking costs one
`stat`. The cache is also rebuilt every `REVALIDATE_S` seconds, and a rebuild re-parses only the
versions whose `metadata.json` changed (by its stat), so a rewritten metadata file is seen too. A
rebuild does file I/O: `refresh` runs on a worker thread (it is thread-safe), `cached` on the event loop.
Answers built from a listing can be memoised with it (`memo`): they are dropped when it changes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from model.checkpoint import METADATA_FILE
from model.registry import Registry, VersionInfo

BULKY_FIELDS = ("history",)  # per-epoch lists: most of a metadata.json's size
REVALIDATE_S = 5.0
MEMO_SIZE = 32

T = TypeVar("T")
_Stamp = tuple[int, int, int] | None


class VersionCatalog:
    """Every registry version with its metadata, from a cache invalidated by the files' stats."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._lock = threading.Lock()
        self._root_stamp: _Stamp = None
        self._built_at = float("-inf")
        self._versions: list[VersionInfo] = []
        self._by_name: dict[str, tuple[_Stamp, VersionInfo]] = {}
        self._memo: dict[Any, Any] = {}

    def cached(self) -> list[VersionInfo] | None:
        """The listing if it is still valid (one stat of the root), else None: call `refresh` then."""
        if time.monotonic() - self._built_at > REVALIDATE_S or _stamp(self.registry.root) != self._root_stamp:
            return None
        return self._versions

    def refresh(self) -> list[VersionInfo]:
        """Rebuild the listing (re-reading only changed metadata); oldest first, errors listed."""
        with self._lock:
            valid = self.cached()  # another thread may have rebuilt it while this one waited
            if valid is not None:
                return valid
            root_stamp = _stamp(self.registry.root)
            names = self.registry.version_names()
            fresh: dict[str, tuple[_Stamp, VersionInfo]] = {}
            for name in names:
                stamp = _stamp(self.registry.root / name / METADATA_FILE)
                cached = self._by_name.get(name)
                fresh[name] = (
                    cached
                    if cached and stamp and cached[0] == stamp
                    else (stamp, self.registry.version_info(name))
                )
            if {n: s for n, (s, _) in fresh.items()} != {n: s for n, (s, _) in self._by_name.items()}:
                self._memo = {}
            self._by_name, self._versions = fresh, [fresh[name][1] for name in names]
            self._root_stamp, self._built_at = root_stamp, time.monotonic()
            return self._versions

    def memo(self, key: Any, build: Callable[[], T]) -> T:
        """`build()` once per key while the listing is unchanged (at most MEMO_SIZE keys kept)."""
        if key not in self._memo:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = build()
        return self._memo[key]


def summary(metadata: dict[str, Any] | None, full: bool) -> dict[str, Any] | None:
    """The metadata as listed: without the bulky fields unless `full`."""
    if metadata is None or full:
        return metadata
    return {key: value for key, value in metadata.items() if key not in BULKY_FIELDS}


def _stamp(path: os.PathLike[str] | str) -> _Stamp:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
