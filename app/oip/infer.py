"""One inference request, from body bytes to response bytes: parse, check against the model, encode.

The body is the JSON inference request, followed by the binary tensor data when the client sent an
`Inference-Header-Content-Length` header (the length of the JSON part). Inputs are checked against the
model's signature before any data is decoded; outputs are returned as JSON data, or as binary data after
the JSON header when asked (`binary_data` per output, `binary_data_output` for all).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np

from app.exceptions import PayloadTooLarge
from app.oip.models import ModelSpec, Tensors
from app.oip.protocol import InferenceRequest, RequestInput
from app.oip.tensors import ProtocolError, decode_tensor, to_binary, to_json_data

HEADER_LENGTH = "inference-header-content-length"
UNSUPPORTED_PARAMETERS = ("shared_memory_region", "classification")


@dataclass(frozen=True)
class Encoded:
    """A response body and how to send it."""

    body: bytes
    media_type: str
    headers: dict[str, str]


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body of a request sent with `Content-Encoding: gzip` or `deflate` (tritonclient's request
    compression), refused past `limit` bytes once inflated, as an uncompressed body would be."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    kind = encoding.strip().lower()
    if kind not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if kind == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the {kind} body cannot be decompressed: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"request body larger than the {limit} byte limit once decompressed")
    if not inflater.eof:
        raise ProtocolError(f"the {kind} body is cut short")
    return out


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The JSON inference request and the binary data that follows it."""
    if header_length is None:
        return InferenceRequest.model_validate_json(body), b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length {header_length!r} must be a length within the "
            f"{len(body)} byte body"
        )
    split = int(header_length)
    return InferenceRequest.model_validate_json(body[:split]), body[split:]


def bind_inputs(spec: ModelSpec, request: InferenceRequest, binary: bytes, latent_dim: int) -> Tensors:
    """The request's inputs as arrays, checked against the model: names, datatypes, shapes, rows."""
    arrays: Tensors = {}
    offset = 0
    rows: int | None = None
    for given in request.inputs:
        tensor = spec.input(given.name)
        if tensor is None:
            known = ", ".join(t.name for t in spec.inputs)
            raise ProtocolError(f"model {spec.name} has no input '{given.name}'; its inputs: {known}")
        if given.name in arrays:
            raise ProtocolError(f"input '{given.name}' is given twice")
        if given.datatype != tensor.datatype:
            raise ProtocolError(
                f"input '{given.name}' must be {tensor.datatype}, got datatype {given.datatype}"
            )
        expected = tensor.row_dims(latent_dim)
        if len(given.shape) != 1 + len(expected) or tuple(given.shape[1:]) != expected:
            wanted = ", ".join(["N", *map(str, expected)])
            raise ProtocolError(f"input '{given.name}' must have shape [{wanted}], got {given.shape}")
        if rows is not None and given.shape[0] != rows:
            raise ProtocolError(f"every input needs the same number of rows: {rows} and {given.shape[0]}")
        rows = given.shape[0]
        if not 1 <= rows <= spec.max_rows:
            raise ProtocolError(f"model {spec.name} takes 1 to {spec.max_rows} rows per request, got {rows}")
        raw, offset = _binary_part(given, binary, offset)
        arrays[given.name] = decode_tensor(given.name, given.datatype, given.shape, given.data, raw)
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data belong to no input")
    missing = [t.name for t in spec.inputs if not t.optional and t.name not in arrays]
    if missing:
        raise ProtocolError(f"model {spec.name} needs input(s) {', '.join(missing)}")
    return arrays


def _binary_part(given: RequestInput, binary: bytes, offset: int) -> tuple[bytes | None, int]:
    """This input's slice of the binary data (None when it sends JSON data), and the next offset."""
    parameters = given.parameters or {}
    _refuse_unsupported(f"input '{given.name}'", parameters)
    size = parameters.get("binary_data_size")
    if size is None:
        return None, offset
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"input '{given.name}': binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise ProtocolError(f"input '{given.name}': binary_data_size {size} runs past the end of the body")
    return binary[offset : offset + size], offset + size


def _refuse_unsupported(what: str, parameters: dict) -> None:
    for name in UNSUPPORTED_PARAMETERS:
        if any(key == name or key.startswith(name + "_") for key in parameters):
            raise ProtocolError(f"{what}: the {name} extension is not supported by this server")


def wanted_outputs(spec: ModelSpec, request: InferenceRequest) -> list[tuple[str, bool]]:
    """(output name, as binary) for each output to return: the requested ones, or all of them."""
    parameters = request.parameters or {}
    all_binary = parameters.get("binary_data_output") is True
    if request.outputs is None:
        return [(tensor.name, all_binary) for tensor in spec.outputs]
    wanted: list[tuple[str, bool]] = []
    for output in request.outputs:
        if spec.output(output.name) is None:
            known = ", ".join(t.name for t in spec.outputs)
            raise ProtocolError(f"model {spec.name} has no output '{output.name}'; its outputs: {known}")
        if any(name == output.name for name, _ in wanted):
            raise ProtocolError(f"output '{output.name}' is requested twice")
        own = output.parameters or {}
        _refuse_unsupported(f"output '{output.name}'", own)
        binary = own.get("binary_data", all_binary)
        wanted.append((output.name, binary is True))
    return wanted


def encode_response(
    spec: ModelSpec, version: str, request: InferenceRequest, results: Tensors, wanted: list[tuple[str, bool]]
) -> Encoded:
    """The inference response: JSON, or the JSON header followed by the binary outputs."""
    outputs = []
    chunks: list[bytes] = []
    for name, binary in wanted:
        datatype = spec.output(name).datatype  # type: ignore[union-attr]  # checked by wanted_outputs
        array: np.ndarray = results[name]
        entry: dict = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = to_binary(datatype, array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(datatype, array)
        outputs.append(entry)
    header: dict = {"model_name": spec.name, "model_version": version, "outputs": outputs}
    if request.id is not None:
        header["id"] = request.id
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return Encoded(text, "application/json", {})
    return Encoded(text + b"".join(chunks), "application/octet-stream", {HEADER_LENGTH: str(len(text))})
