"""The Open Inference Protocol (/v2) against the real server, through its reference client `tritonclient`.

The client is NVIDIA's, not ours: it sends binary tensor data by default and reads our errors from the
protocol's `{"error": ...}` object. The answers must equal what the service's own endpoints give for the
same inputs: a seeded decoder row is the /generate PNG's pixels, an encoded digit has /encode's mu.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from fastapi import FastAPI
from PIL import Image
from tritonclient.utils import InferenceServerException

from app.model_pool import ModelPool
from app.oip import routes as oip_routes
from model.checkpoint import VersionMetadata, read_metadata
from model.errors import CheckpointError
from model.registry import Registry
from tests.builders.images import digit_png
from tests.builders.metrics import scrape, value
from tests.builders.models import make_random_registry

pytestmark = pytest.mark.timeout(180)

DECODER, ENCODER, TEXT = "cvae-decoder", "cvae-encoder", "cvae-text"


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.removeprefix("http://"), concurrency=4) as c:
        yield c


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
    """A tritonclient input holding `array`."""
    given = triton.InferInput(name, list(array.shape), datatype)
    given.set_data_from_numpy(array, binary_data=binary)
    return given


def png_pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def latent_dim(http: httpx.Client) -> int:
    mu = http.post("/encode", files={"file": ("d.png", digit_png(np.eye(28, dtype=np.uint8) * 255))}).json()[
        "mu"
    ]
    return len(mu)


# -- server and models -----------------------------------------------------------------------------------
def test_server_live_ready_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "cvae-digits"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_ready(
    client: triton.InferenceServerClient,
    http: httpx.Client,
    serving_registry,  # noqa: ANN001
    active_version: str,
    other_version: str,
) -> None:
    versions = Registry(serving_registry).version_names()
    dim = latent_dim(http)
    decoder = client.get_model_metadata(DECODER)
    assert decoder["versions"] == versions
    assert {t["name"]: (t["datatype"], t["shape"]) for t in decoder["inputs"]} == {
        "labels": ("INT64", [-1]),
        "latents": ("FP32", [-1, dim]),
        "seed": ("INT64", [-1]),
        "temperature": ("FP32", [-1]),
    }
    assert {t["name"]: (t["datatype"], t["shape"]) for t in decoder["outputs"]} == {
        "images": ("FP32", [-1, 28, 28]),
        "pixels": ("UINT8", [-1, 28, 28]),
        "latents": ("FP32", [-1, dim]),
    }
    encoder = client.get_model_metadata(ENCODER, model_version=active_version)
    assert [t["name"] for t in encoder["inputs"]] == ["images", "pixels", "labels"]
    assert {"mu", "log_var", "label", "label_probs", "elbo", "recon_bce", "kl"} <= {
        t["name"] for t in encoder["outputs"]
    }
    for name in (DECODER, ENCODER, TEXT):
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, active_version)
    one = tensor("labels", np.array([3], dtype=np.int64), "INT64")
    assert client.infer(DECODER, [one], model_version=other_version).get_response()["model_version"] == (
        other_version
    )
    assert client.is_model_ready(DECODER, other_version)  # loaded by its first request
    index = client.get_model_repository_index()
    assert {(e["name"], e["version"]) for e in index} == {
        (m, v) for m in (DECODER, ENCODER, TEXT) for v in versions
    }
    assert {e["state"] for e in index if e["version"] == active_version} == {"READY"}
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("no-such-model")
    with pytest.raises(InferenceServerException, match="unknown model version"):
        client.get_model_metadata(DECODER, model_version="v9999")


# -- decoder ---------------------------------------------------------------------------------------------
def test_decoder_batch_of_64_seeded_rows_equals_generate(
    client: triton.InferenceServerClient, http: httpx.Client, active_version: str
) -> None:
    labels = np.arange(64, dtype=np.int64) % 10
    seeds = 1000 + np.arange(64, dtype=np.int64)
    temperature = np.full(64, 0.8, dtype=np.float32)
    result = client.infer(
        DECODER,
        [
            tensor("labels", labels, "INT64"),
            tensor("seed", seeds, "INT64"),
            tensor("temperature", temperature, "FP32"),
        ],
        model_version=active_version,
    )
    pixels, images = result.as_numpy("pixels"), result.as_numpy("images")
    assert pixels.shape == (64, 28, 28) and pixels.dtype == np.uint8
    assert images.shape == (64, 28, 28) and images.dtype == np.float32
    assert np.array_equal(pixels, np.rint(images * 255).astype(np.uint8))
    assert len({p.tobytes() for p in pixels}) == 64  # 64 different writers
    for label, seed, row in zip(labels, seeds, pixels, strict=True):
        body = {"text": str(label), "seed": int(seed), "temperature": 0.8}
        png = http.post("/generate", json=body, params={"version": active_version})
        assert png.status_code == 200, png.text
        assert np.array_equal(png_pixels(png.content), row), f"label {label} seed {seed}"


def test_decoder_rows_with_one_seed_write_a_number_as_generate(
    client: triton.InferenceServerClient, http: httpx.Client, active_version: str
) -> None:
    """/generate writes a number with one writer (one seed): the same seed on every row gives it."""
    digits = np.array([2, 0, 2, 6], dtype=np.int64)
    result = client.infer(
        DECODER,
        [tensor("labels", digits, "INT64"), tensor("seed", np.full(4, 42, dtype=np.int64), "INT64")],
        model_version=active_version,
    )
    sheet = np.concatenate(list(result.as_numpy("pixels")), axis=1)  # (28, 112)
    png = http.post("/generate", json={"text": "2026", "seed": 42}, params={"version": active_version})
    assert np.array_equal(png_pixels(png.content), sheet)


def test_decoder_latents_equal_generate_style(
    client: triton.InferenceServerClient,
    http: httpx.Client,
    mnist,
    active_version: str,  # noqa: ANN001
) -> None:
    images, _ = mnist
    encoded = http.post(
        "/encode", files={"file": ("d.png", digit_png(images[0]))}, params={"version": active_version}
    )
    mu = np.array([encoded.json()["mu"]], dtype=np.float32)
    result = client.infer(
        DECODER,
        [tensor("labels", np.array([5], dtype=np.int64), "INT64"), tensor("latents", mu, "FP32")],
        model_version=active_version,
        outputs=[
            triton.InferRequestedOutput("pixels"),
            triton.InferRequestedOutput("latents", binary_data=False),
        ],
    )
    assert np.array_equal(result.as_numpy("latents"), mu)
    png = http.post(
        "/generate", json={"text": "5", "style": mu[0].tolist()}, params={"version": active_version}
    )
    assert np.array_equal(png_pixels(png.content), result.as_numpy("pixels")[0])


# -- encoder ---------------------------------------------------------------------------------------------
def test_encoder_batch_of_64_digits_equals_encode(
    client: triton.InferenceServerClient,
    http: httpx.Client,
    mnist,
    active_version: str,  # noqa: ANN001
) -> None:
    images, labels = mnist
    digits = np.ascontiguousarray(images[:64])
    given = np.where(np.arange(64) % 2 == 0, -1, labels[:64].astype(np.int64))  # even rows: model chooses
    result = client.infer(
        ENCODER,
        [tensor("pixels", digits, "UINT8"), tensor("labels", given, "INT64")],
        model_version=active_version,
    )
    mu, chosen, probs = result.as_numpy("mu"), result.as_numpy("label"), result.as_numpy("label_probs")
    assert mu.shape[0] == 64 and probs.shape == (64, 10)
    for i in range(64):
        form = {} if given[i] < 0 else {"label": str(int(given[i]))}
        answer = http.post(
            "/encode",
            files={"file": ("d.png", digit_png(digits[i]))},
            data=form,
            params={"version": active_version},
        ).json()
        assert answer["label_source"] == ("inferred" if given[i] < 0 else "given")
        assert mu[i].tolist() == answer["mu"], f"row {i}"
        assert result.as_numpy("log_var")[i].tolist() == answer["log_var"]
        assert int(chosen[i]) == answer["label"]
        assert probs[i].tolist() == answer["label_probs"]
        assert float(result.as_numpy("elbo")[i]) == answer["metrics"]["elbo"]
        assert float(result.as_numpy("kl")[i]) == answer["metrics"]["kl"]
    inferred = chosen[given < 0]
    assert (inferred == labels[:64][given < 0]).mean() > 0.5  # the trained model reads most digits


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests_give_the_same_answer(
    client: triton.InferenceServerClient,
    mnist,
    active_version: str,
    compression: str,  # noqa: ANN001
) -> None:
    images, _ = mnist
    plain = client.infer(ENCODER, [tensor("pixels", images[:4], "UINT8")], model_version=active_version)
    packed = client.infer(
        ENCODER,
        [tensor("pixels", images[:4], "UINT8")],
        model_version=active_version,
        request_compression_algorithm=compression,
        response_compression_algorithm=compression,
    )
    assert np.array_equal(plain.as_numpy("mu"), packed.as_numpy("mu"))


def test_encoder_takes_fp32_images(client: triton.InferenceServerClient, mnist, active_version: str) -> None:  # noqa: ANN001
    images, _ = mnist
    as_pixels = client.infer(ENCODER, [tensor("pixels", images[:3], "UINT8")], model_version=active_version)
    as_floats = client.infer(
        ENCODER,
        [tensor("images", images[:3].astype(np.float32) / np.float32(255), "FP32", binary=False)],
        model_version=active_version,
    )
    assert np.array_equal(as_pixels.as_numpy("mu"), as_floats.as_numpy("mu"))


# -- text ------------------------------------------------------------------------------------------------
def test_text_model_gives_the_generate_png(
    client: triton.InferenceServerClient, http: httpx.Client, active_version: str
) -> None:
    texts = np.array([b"42", b"2026", b"7"], dtype=object)
    seeds = np.array([1, 2, 3], dtype=np.int64)
    result = client.infer(
        TEXT, [tensor("text", texts, "BYTES"), tensor("seed", seeds, "INT64")], model_version=active_version
    )
    assert result.as_numpy("seed").tolist() == [1, 2, 3]
    for text, seed, png in zip(texts, seeds, result.as_numpy("png"), strict=True):
        own = http.post(
            "/generate", json={"text": text.decode(), "seed": int(seed)}, params={"version": active_version}
        )
        assert png == own.content


# -- errors ----------------------------------------------------------------------------------------------
def refusal(
    client: triton.InferenceServerClient, model: str, inputs: list, **options: object
) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs, **options)
    return caught.value


def test_bad_requests_are_4xx_with_our_message(client: triton.InferenceServerClient) -> None:
    labels = np.array([1, 2], dtype=np.int64)
    wrong_type = refusal(client, DECODER, [tensor("labels", labels.astype(np.float32), "FP32")])
    assert wrong_type.status() == "400"
    assert wrong_type.message() == "input 'labels' must be INT64, got datatype FP32"
    unknown = refusal(client, DECODER, [tensor("digits", labels, "INT64")])
    assert unknown.status() == "400" and "has no input 'digits'" in unknown.message()
    shape = refusal(client, ENCODER, [tensor("pixels", np.zeros((2, 28, 27), dtype=np.uint8), "UINT8")])
    assert shape.status() == "400" and "must have shape [N, 28, 28]" in shape.message()
    rows = refusal(client, DECODER, [tensor("labels", np.zeros(513, dtype=np.int64), "INT64")])
    assert rows.status() == "400" and "1 to 512 rows" in rows.message()
    output = refusal(
        client, DECODER, [tensor("labels", labels, "INT64")], outputs=[triton.InferRequestedOutput("logits")]
    )
    assert output.status() == "400" and "has no output 'logits'" in output.message()
    digit = refusal(client, DECODER, [tensor("labels", np.array([10], dtype=np.int64), "INT64")])
    assert digit.status() == "400" and "digits 0 to 9" in digit.message()
    model = refusal(client, "cvae-classifier", [tensor("labels", labels, "INT64")])
    assert model.status() == "404"
    version = refusal(client, DECODER, [tensor("labels", labels, "INT64")], model_version="v9999")
    assert version.status() == "404" and "unknown model version" in version.message()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "Invalid JSON"),
        (b'{"inputs": []}', "inputs"),
        (b'{"inputs": [{"name": "labels", "shape": [2], "datatype": "INT64", "data": [1]}]}', "needs 2"),
        (
            b'{"inputs": [{"name": "labels", "shape": [1], "datatype": "INT64", "data": [1.5]}]}',
            "whole numbers",
        ),
        (b'{"inputs": [{"name": "labels", "shape": [1], "datatype": "INT64"}]}', "has no data"),
    ],
)
def test_malformed_bodies_are_400_in_the_protocol_shape(
    http: httpx.Client, body: bytes, message: str
) -> None:
    answer = http.post(f"/v2/models/{DECODER}/infer", content=body)
    assert answer.status_code == 400
    assert set(answer.json()) == {"error"} and message in answer.json()["error"]


def test_body_limit_answers_in_the_protocol_shape(http: httpx.Client) -> None:
    answer = http.post(f"/v2/models/{ENCODER}/infer", content=b"{" + b" " * 6_000_000 + b"}")
    assert answer.status_code == 413
    assert "byte limit" in answer.json()["error"]


def test_json_data_and_binary_outputs_mix(http: httpx.Client, active_version: str) -> None:
    """Without tritonclient: nested JSON data in, one output as JSON and one as binary data out."""
    body = {
        "id": "r1",
        "inputs": [
            {"name": "labels", "shape": [2], "datatype": "INT64", "data": [4, 2]},
            {"name": "latents", "shape": [2, 0], "datatype": "FP32", "data": [[], []]},
        ],
    }
    wrong = http.post(f"/v2/models/{DECODER}/versions/{active_version}/infer", json=body)
    assert wrong.status_code == 400 and "must have shape [N," in wrong.json()["error"]
    body["inputs"] = body["inputs"][:1] + [
        {"name": "seed", "shape": [2], "datatype": "INT64", "data": [9, 9]}
    ]
    body["outputs"] = [{"name": "latents"}, {"name": "pixels", "parameters": {"binary_data": True}}]
    answer = http.post(f"/v2/models/{DECODER}/versions/{active_version}/infer", json=body)
    assert answer.status_code == 200, answer.text
    split = int(answer.headers["inference-header-content-length"])
    header = httpx.Response(200, content=answer.content[:split]).json()
    assert header["id"] == "r1" and header["model_version"] == active_version
    latents, pixels = header["outputs"]
    assert latents["data"][: len(latents["data"]) // 2] == latents["data"][len(latents["data"]) // 2 :]
    assert pixels["parameters"]["binary_data_size"] == len(answer.content) - split == 2 * 28 * 28


def test_repository_index_filters_ready_whatever_the_content_type(http: httpx.Client) -> None:
    everything = http.post("/v2/repository/index")
    ready = http.post("/v2/repository/index", content=b'{"ready": true}')  # no Content-Type, as curl -d
    assert everything.status_code == ready.status_code == 200
    assert {e["state"] for e in ready.json()} == {"READY"}
    assert [e for e in everything.json() if e["state"] == "READY"] == ready.json()
    refused = http.post("/v2/repository/index", content=b'{"ready": "maybe"}')
    assert refused.status_code == 400 and "ready" in refused.json()["error"]
    unknown = http.get("/v2/no-such-endpoint")
    assert unknown.status_code == 404 and unknown.json() == {"error": "Not Found"}


def test_concurrent_protocol_requests_are_counted_and_batch_independent(
    server: str, http: httpx.Client, active_version: str
) -> None:
    """32 tritonclient requests of 4 rows at once: /metrics counts every one and every row went through
    the batcher, and no answer depends on the batch it landed in. (Whether requests that arrive together
    share a pass depends on their timing; the joining itself is tested deterministically in
    tests/app/test_batching.py.)"""
    requests = [
        [
            tensor("labels", np.array([1, 2, 3, 4], dtype=np.int64), "INT64"),
            tensor("seed", np.full(4, 500 + i, dtype=np.int64), "INT64"),
        ]
        for i in range(32)
    ]
    before = scrape(http)
    with triton.InferenceServerClient(server.removeprefix("http://"), concurrency=32) as many:
        pending = [many.async_infer(DECODER, inputs, model_version=active_version) for inputs in requests]
        results = [p.get_result().as_numpy("pixels") for p in pending]
    after = scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    endpoint = "/v2/models/{name}/versions/{version}/infer"
    assert delta("cvae_requests_total", endpoint=endpoint, status="200") == 32
    assert delta("cvae_batch_rows_sum", kind="decode") == 32 * 4
    assert 1 <= delta("cvae_batch_size_count", kind="decode") <= 32
    with triton.InferenceServerClient(server.removeprefix("http://")) as one:
        for i in (0, 13, 31):
            alone = one.infer(DECODER, requests[i], model_version=active_version).as_numpy("pixels")
            assert np.array_equal(alone, results[i])


# -- metadata and repository index from the pool's catalog (in process, no server) ---------------------
def _oip_app(registry: Registry) -> FastAPI:
    """The /v2 router alone over a model pool of `registry` (nothing loaded)."""
    app = FastAPI()
    app.include_router(oip_routes.router)
    app.state.service = SimpleNamespace(pool=ModelPool(registry, torch.device("cpu"), 2))
    return app


def _get_all(app: FastAPI, calls: list[tuple[str, str]]) -> list[httpx.Response]:
    async def body() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.request(method, path) for method, path in calls]

    return asyncio.run(body())


def test_metadata_and_index_of_good_broken_and_unknown_versions(tmp_path: Path) -> None:
    """The latent size comes from the cached catalog: -1 for a version whose metadata cannot be read,
    as reading metadata.json directly gives; the index calls that version unreadable."""
    registry = make_random_registry(tmp_path / "registry", versions=2)
    (registry.root / "v0003").mkdir()
    (registry.root / "v0003" / "metadata.json").write_text("{not json")
    app = _oip_app(registry)

    def expected_dim(version: str) -> int:  # what reading the file gives
        try:
            return VersionMetadata.from_record(read_metadata(registry.path(version))).latent_dim
        except CheckpointError:
            return -1

    dims = {v: expected_dim(v) for v in ("v0001", "v0002", "v0003")}
    assert dims["v0001"] > 0 and dims["v0003"] == -1
    active, *versions, unknown, index = _get_all(
        app,
        [
            ("GET", f"/v2/models/{DECODER}"),
            *[("GET", f"/v2/models/{DECODER}/versions/{v}") for v in dims],
            ("GET", f"/v2/models/{DECODER}/versions/v9999"),
            ("POST", "/v2/repository/index"),
        ],
    )
    for response, version in zip([active, *versions], ["v0001", *dims], strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["versions"] == ["v0001", "v0002", "v0003"]
        shapes = {t["name"]: t["shape"] for t in body["inputs"]}
        assert shapes["latents"] == [-1, dims[version]] and shapes["labels"] == [-1]
    assert unknown.status_code == 404 and unknown.json() == {"error": "unknown model version 'v9999'"}
    assert index.status_code == 200
    reasons = {(e["name"], e["version"]): (e["state"], e["reason"]) for e in index.json()}
    assert reasons == {
        (name, version): (
            "UNAVAILABLE",
            "the version cannot be read"
            if version == "v0003"
            else "not loaded; its first inference request loads it",
        )
        for name in (DECODER, ENCODER, TEXT)
        for version in dims
    }

    # a newly published version is listed at once (the registry root changed), and without an active
    # pointer the active version's metadata is 503 as before
    make_random_registry(tmp_path / "more", versions=1)
    (tmp_path / "more" / "v0001").rename(registry.root / "v0004")
    (registry.root / "active").unlink()
    fresh, no_active = _get_all(
        app, [("GET", f"/v2/models/{DECODER}/versions/v0004"), ("GET", f"/v2/models/{DECODER}")]
    )
    assert fresh.status_code == 200 and fresh.json()["versions"] == ["v0001", "v0002", "v0003", "v0004"]
    assert no_active.status_code == 503 and "no active version" in no_active.json()["error"]
