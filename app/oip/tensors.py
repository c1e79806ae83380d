"""Tensors of the Open Inference Protocol: datatypes, JSON `data` and the binary tensor data extension.

A request input carries its elements either as JSON `data` (flat or nested, row-major) or, with the
binary extension, as `binary_data_size` bytes of the body after the JSON header (little-endian, row-major;
a BYTES element is a 4-byte little-endian length followed by its bytes). This module turns either form into
a numpy array of the declared shape, and an output array back into either form. It knows nothing of HTTP
or of the models: every problem is a `ProtocolError` whose message names the tensor.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

# The protocol's datatypes and their numpy form (BYTES elements are Python `bytes` in an object array).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_LENGTH = struct.Struct("<I")  # the length prefix of one BYTES element


class ProtocolError(ValueError):
    """A request that does not follow the protocol or the model's signature (answered 400)."""


def element_count(name: str, shape: list[int]) -> int:
    """The number of elements of a shape, which must be non-negative whole numbers."""
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise ProtocolError(f"input '{name}': shape {shape} must be a list of non-negative integers")
    return math.prod(shape)


def decode_tensor(
    name: str, datatype: str, shape: list[int], data: list[Any] | None, raw: bytes | None
) -> np.ndarray:
    """The array of one request input, from its JSON `data` or its binary bytes (exactly one is given)."""
    if datatype not in DATATYPES:
        raise ProtocolError(f"input '{name}': unknown datatype {datatype!r}; one of {', '.join(DATATYPES)}")
    count = element_count(name, shape)
    if raw is not None:
        if data is not None:
            raise ProtocolError(f"input '{name}' has both JSON data and binary_data_size")
        values = _from_binary(name, datatype, raw, count)
    elif data is None:
        raise ProtocolError(f"input '{name}' has no data")
    else:
        values = _from_json(name, datatype, _flatten(data), count)
    return values.reshape(shape)


def _flatten(data: Iterable[Any]) -> list[Any]:
    """The elements of nested lists in row-major order (iterative: no recursion limit to hit)."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _from_json(name: str, datatype: str, flat: list[Any], count: int) -> np.ndarray:
    if len(flat) != count:
        raise ProtocolError(f"input '{name}': data has {len(flat)} elements, its shape needs {count}")
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"input '{name}': BYTES data must be strings")
        out = np.empty(count, dtype=object)
        out[:] = [v.encode("utf-8") for v in flat]
        return out
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise ProtocolError(f"input '{name}': BOOL data must be true or false")
        return np.array(flat, dtype=dtype)
    if dtype.kind in "iu":
        if not all(type(v) is int for v in flat):
            raise ProtocolError(f"input '{name}': {datatype} data must be whole numbers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise ProtocolError(f"input '{name}': a value is outside the {datatype} range")
        return np.array(flat, dtype=dtype)
    if not all(type(v) in (int, float) for v in flat):
        raise ProtocolError(f"input '{name}': {datatype} data must be numbers")
    with np.errstate(over="ignore"):  # out-of-range values become inf; the models refuse non-finite input
        return np.array(flat, dtype=np.float64).astype(dtype)


def _from_binary(name: str, datatype: str, raw: bytes, count: int) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(name, raw, count)
    dtype = DATATYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            f"input '{name}': {len(raw)} bytes of binary data, its shape and {datatype} need "
            f"{count * dtype.itemsize}"
        )
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and not np.isin(np.frombuffer(raw, dtype=np.uint8), (0, 1)).all():
        raise ProtocolError(f"input '{name}': BOOL bytes must be 0 or 1")
    return values.copy()  # writable, and independent of the request body


def _bytes_elements(name: str, raw: bytes, count: int) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + _LENGTH.size > len(raw):
            raise ProtocolError(f"input '{name}': binary BYTES data ends before element {i}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise ProtocolError(f"input '{name}': binary BYTES element {i} is cut short")
        out[i] = raw[offset : offset + length]
        offset += length
    if offset != len(raw):
        raise ProtocolError(f"input '{name}': {len(raw) - offset} bytes left after {count} BYTES elements")
    return out


def to_json_data(datatype: str, array: np.ndarray) -> list[Any]:
    """Flat row-major JSON `data` of an output. BYTES elements are UTF-8 text, or base64 when they are
    not text (a PNG)."""
    flat = array.reshape(-1)
    if datatype != "BYTES":
        return flat.tolist()
    return [_text_or_base64(bytes(v)) for v in flat]


def _text_or_base64(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")


def to_binary(datatype: str, array: np.ndarray) -> bytes:
    """The binary tensor data of an output: little-endian, row-major, length-prefixed BYTES."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(v)) + bytes(v) for v in array.reshape(-1))
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
