"""The Open Inference Protocol's tensor codec and request binding, without a server."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from app.exceptions import PayloadTooLarge
from app.oip import infer
from app.oip.models import MODELS
from app.oip.tensors import ProtocolError, decode_tensor, to_binary, to_json_data

DECODER = MODELS["cvae-decoder"]


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False, True, True, False, False]),
        ("UINT8", [0, 1, 2, 253, 254, 255]),
        ("INT16", [-32768, -1, 0, 1, 2, 32767]),
        ("INT64", [-(2**63), -1, 0, 1, 2, 2**63 - 1]),
        ("UINT64", [0, 1, 2, 3, 4, 2**64 - 1]),
        ("FP16", [0.5, -2.0, 0.0, 1.0, 65504.0, -0.25]),
        ("FP32", [0.1, -2.5, 0.0, 1.0, 3.4e38, -1e-30]),
        ("FP64", [0.1, -2.5, 0.0, 1.0, 1e300, -1e-300]),
    ],
)
def test_json_and_binary_forms_give_the_same_array(datatype: str, values: list) -> None:
    nested = [values[:3], values[3:]]
    from_json = decode_tensor("x", datatype, [2, 3], nested, None)
    assert from_json.shape == (2, 3)
    assert from_json.reshape(-1).tolist() == pytest.approx(list(values), rel=1e-3)
    from_binary = decode_tensor("x", datatype, [2, 3], None, to_binary(datatype, from_json))
    assert np.array_equal(from_binary, from_json)
    assert decode_tensor("x", datatype, [6], to_json_data(datatype, from_json), None).tolist() == (
        from_json.reshape(-1).tolist()
    )


def test_bytes_elements_round_trip_and_non_text_is_base64_in_json() -> None:
    values = np.array([b"42", b"", b"\x89PNG\r\n"], dtype=object)
    raw = to_binary("BYTES", values)
    assert raw == struct.pack("<I", 2) + b"42" + struct.pack("<I", 0) + struct.pack("<I", 6) + b"\x89PNG\r\n"
    assert decode_tensor("t", "BYTES", [3], None, raw).tolist() == values.tolist()
    assert to_json_data("BYTES", values) == ["42", "", "iVBORw0K"]
    assert decode_tensor("t", "BYTES", [1], ["2026"], None).tolist() == [b"2026"]


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "raw", "message"),
    [
        ("FP8", [1], [1], None, "unknown datatype"),
        ("INT64", [2], [1], None, "data has 1 elements, its shape needs 2"),
        ("INT64", [1], [1.5], None, "whole numbers"),
        ("INT64", [1], [True], None, "whole numbers"),
        ("INT8", [1], [128], None, "outside the INT8 range"),
        ("FP32", [1], ["1"], None, "must be numbers"),
        ("BOOL", [1], [1], None, "true or false"),
        ("BYTES", [1], [7], None, "strings"),
        ("INT64", [1], None, None, "has no data"),
        ("INT64", [1], [1], b"\0" * 8, "both JSON data and binary_data_size"),
        ("INT64", [2], None, b"\0" * 8, "8 bytes of binary data, its shape and INT64 need 16"),
        ("BOOL", [1], None, b"\x02", "0 or 1"),
        ("BYTES", [2], None, struct.pack("<I", 1) + b"a", "ends before element 1"),
        ("BYTES", [1], None, struct.pack("<I", 5) + b"a", "cut short"),
        ("BYTES", [1], None, struct.pack("<I", 1) + b"ab", "1 bytes left"),
        ("INT64", [-1], [1], None, "non-negative integers"),
    ],
)
def test_bad_tensors_are_protocol_errors(
    datatype: str, shape: list, data: list | None, raw: bytes | None, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_tensor("x", datatype, shape, data, raw)


def test_deeply_nested_data_does_not_recurse() -> None:
    data: list = [7]
    for _ in range(100_000):
        data = [data]
    assert decode_tensor("x", "INT64", [1], data, None).tolist() == [7]


def binary_request(inputs: list[tuple[str, str, list[int], bytes]], outputs: list | None = None) -> bytes:
    header = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
            for n, d, s, b in inputs
        ],
        **({"outputs": outputs} if outputs is not None else {}),
    }
    return json.dumps(header).encode()


def test_binary_inputs_are_cut_from_the_body_in_order() -> None:
    labels, latents = np.array([4, 2], dtype="<i8"), np.arange(8, dtype="<f4").reshape(2, 4)
    parts = [("labels", "INT64", [2], labels.tobytes()), ("latents", "FP32", [2, 4], latents.tobytes())]
    header = binary_request(parts)
    body = header + labels.tobytes() + latents.tobytes()
    request, binary = infer.parse_request(body, str(len(header)))
    arrays = infer.bind_inputs(DECODER, request, binary, latent_dim=4)
    assert arrays["labels"].tolist() == [4, 2] and np.array_equal(arrays["latents"], latents)
    with pytest.raises(ProtocolError, match="1 bytes of binary data belong to no input"):
        infer.bind_inputs(DECODER, *infer.parse_request(body + b"!", str(len(header))), latent_dim=4)
    with pytest.raises(ProtocolError, match="runs past the end"):
        infer.bind_inputs(DECODER, *infer.parse_request(body[:-1], str(len(header))), latent_dim=4)
    with pytest.raises(ProtocolError, match="must have shape \\[N, 8\\]"):
        infer.bind_inputs(DECODER, request, binary, latent_dim=8)
    with pytest.raises(ProtocolError, match="Inference-Header-Content-Length"):
        infer.parse_request(body, str(len(body) + 1))


def test_outputs_binary_per_output_or_for_all() -> None:
    request, _ = infer.parse_request(
        b'{"inputs": [{"name": "labels", "shape": [1], "datatype": "INT64", "data": [1]}],'
        b' "parameters": {"binary_data_output": true},'
        b' "outputs": [{"name": "pixels"}, {"name": "latents", "parameters": {"binary_data": false}}]}',
        None,
    )
    assert infer.wanted_outputs(DECODER, request) == [("pixels", True), ("latents", False)]
    everything, _ = infer.parse_request(
        b'{"inputs": [{"name": "labels", "shape": [1], "datatype": "INT64", "data": [1]}]}', None
    )
    assert infer.wanted_outputs(DECODER, everything) == [
        ("images", False),
        ("pixels", False),
        ("latents", False),
    ]
    classified, _ = infer.parse_request(
        b'{"inputs": [{"name": "labels", "shape": [1], "datatype": "INT64", "data": [1]}],'
        b' "outputs": [{"name": "pixels", "parameters": {"classification": 3}}]}',
        None,
    )
    with pytest.raises(ProtocolError, match="classification extension is not supported"):
        infer.wanted_outputs(DECODER, classified)


def test_a_missing_required_input_and_mismatched_rows_are_refused() -> None:
    seed_only, _ = infer.parse_request(
        b'{"inputs": [{"name": "seed", "shape": [1], "datatype": "INT64", "data": [1]}]}', None
    )
    with pytest.raises(ProtocolError, match="needs input\\(s\\) labels"):
        infer.bind_inputs(DECODER, seed_only, b"", latent_dim=4)
    rows, _ = infer.parse_request(
        b'{"inputs": [{"name": "labels", "shape": [2], "datatype": "INT64", "data": [1, 2]},'
        b' {"name": "seed", "shape": [1], "datatype": "INT64", "data": [1]}]}',
        None,
    )
    with pytest.raises(ProtocolError, match="same number of rows: 2 and 1"):
        infer.bind_inputs(DECODER, rows, b"", latent_dim=4)


def test_compressed_bodies_are_inflated_within_the_limit() -> None:
    body = b'{"inputs": []}' * 10
    assert infer.decompress(gzip.compress(body), "gzip", 1000) == body
    assert infer.decompress(zlib.compress(body), "deflate", 1000) == body
    assert infer.decompress(body, None, 1000) == body
    with pytest.raises(PayloadTooLarge, match="once decompressed"):
        infer.decompress(gzip.compress(b" " * 10_000_000), "gzip", 5_000_000)  # a 10 kB bomb
    with pytest.raises(ProtocolError, match="cannot be decompressed"):
        infer.decompress(b"not gzip", "gzip", 1000)
    with pytest.raises(ProtocolError, match="cut short"):
        infer.decompress(gzip.compress(body)[:-12], "gzip", 1000)
    with pytest.raises(ProtocolError, match="not supported"):
        infer.decompress(body, "br", 1000)
