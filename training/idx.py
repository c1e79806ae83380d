"""Reading and writing IDX files (the MNIST format), plain or gzipped, with every field checked."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_DTYPES = {0x08: np.uint8}
_MAX_ITEMS = 10_000_000


class IdxError(ValueError):
    """An IDX file is malformed: bad magic number, unsupported type, or sizes that do not match."""


def _open_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise IdxError(f"{path}: cannot read ({exc})") from exc


def read_idx(path: Path | str) -> np.ndarray:
    """Parse an IDX file of unsigned bytes into an array of its declared shape."""
    path = Path(path)
    data = _open_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in _DTYPES:
        raise IdxError(f"{path}: element type 0x{dtype_code:02x} is not supported (only unsigned bytes)")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise IdxError(f"{path}: header declares {ndim} dimensions but is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    if count > _MAX_ITEMS * 784:
        raise IdxError(f"{path}: declared shape {shape} is implausibly large")
    body = data[4 + 4 * ndim :]
    if len(body) != count:
        raise IdxError(f"{path}: shape {shape} needs {count} bytes of data, file has {len(body)}")
    return np.frombuffer(body, dtype=_DTYPES[dtype_code]).reshape(shape)


def write_idx(path: Path | str, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as IDX; gzipped when the name ends in .gz (mtime 0: reproducible bytes)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
