"""Broken versions planted in a registry copy: what a bad disk, a killed copy or an attacker leaves.

`plant(registry, source, damage)` copies a good version under the next version name and damages it:

- `bit-flip`: one byte of the weights flipped (the metadata's sha256 no longer matches);
- `truncated`: the weights cut in half, the digest updated so the safetensors parser itself must refuse;
- `no-weights`: the weights file deleted;
- `bad-metadata`: metadata.json replaced by half of itself (not JSON);
- `pickle`: the weights replaced by a pickle whose loading would create `PICKLE_MARKER` next to the
  registry, the digest updated so only the file format stands in the way.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

from model.checkpoint import METADATA_FILE, WEIGHTS_FILE
from model.registry import Registry

DAMAGES = ("bit-flip", "truncated", "no-weights", "bad-metadata", "pickle")
PICKLE_MARKER = "pickle-was-executed.txt"


class _Exploit:
    """Unpickling this calls Path.write_text(marker, ...): the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (Path.write_text, (self.marker, "pickle code ran"))


def marker_path(registry: Registry) -> Path:
    """Where the planted pickle would write if it were ever unpickled."""
    return registry.root.parent / PICKLE_MARKER


def _set_digest(version: Path) -> None:
    metadata = json.loads((version / METADATA_FILE).read_text())
    metadata["weights_sha256"] = hashlib.sha256((version / WEIGHTS_FILE).read_bytes()).hexdigest()
    (version / METADATA_FILE).write_text(json.dumps(metadata))


def plant(registry: Registry, source: str, damage: str) -> str:
    """Copy version `source` to a new version and apply `damage`; returns the new version's name."""
    name = registry.next_version_name()
    version = registry.root / name
    shutil.copytree(registry.path(source), version)
    weights, metadata = version / WEIGHTS_FILE, version / METADATA_FILE
    if damage == "bit-flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        _set_digest(version)
    elif damage == "no-weights":
        weights.unlink()
    elif damage == "bad-metadata":
        metadata.write_text(metadata.read_text()[: metadata.stat().st_size // 2])
    elif damage == "pickle":
        weights.write_bytes(pickle.dumps(_Exploit(marker_path(registry))))
        _set_digest(version)
    else:
        raise ValueError(f"unknown damage {damage!r}")
    return name
