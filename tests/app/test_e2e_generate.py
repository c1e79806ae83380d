"""POST /generate against the real server: sizes, headers, every parameter, reproducibility, errors."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(120)


def pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "L"  # 8-bit grayscale
    return np.asarray(image)


def generate(http: httpx.Client, params: dict | None = None, **body: object) -> httpx.Response:
    return http.post("/generate", json=body, params=params or {})


def test_png_size_and_headers(http: httpx.Client, active_version: str) -> None:
    response = generate(http, text="2026", seed=5)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert pixels(response.content).shape == (28, 4 * 28)
    assert response.headers["x-model-version"] == active_version
    assert response.headers["x-seed"] == "5"
    assert float(response.headers["x-inference-ms"]) > 0
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    "text,samples,scale", [("7", 1, 1), ("1 2", 3, 2), ("0123456789" * 3 + "12", 2, 1), ("42", 16, 8)]
)
def test_dimensions_follow_text_samples_and_scale(
    http: httpx.Client, text: str, samples: int, scale: int
) -> None:
    response = generate(http, text=text, samples=samples, scale=scale, seed=1)
    assert response.status_code == 200
    assert pixels(response.content).shape == (28 * samples * scale, 28 * len(text) * scale)


def test_a_space_is_a_blank_tile_black_or_white_when_inverted(http: httpx.Client) -> None:
    plain = pixels(generate(http, text="1 1", seed=3).content)
    inverted = pixels(generate(http, text="1 1", seed=3, invert=True).content)
    assert plain[:, 28:56].max() == 0 and inverted[:, 28:56].min() == 255
    assert np.array_equal(inverted, 255 - plain)


def test_scale_is_nearest_neighbour(http: httpx.Client) -> None:
    small = pixels(generate(http, text="8", seed=9).content)
    big = pixels(generate(http, text="8", seed=9, scale=3).content)
    assert np.array_equal(big, small.repeat(3, axis=0).repeat(3, axis=1))


def test_the_same_seed_gives_byte_identical_png(http: httpx.Client) -> None:
    body = {"text": "31 4", "samples": 3, "seed": 2**63 - 1, "temperature": 1.3, "scale": 2}
    first, second = generate(http, **body), generate(http, **body)
    assert first.content == second.content
    other = generate(http, **{**body, "seed": 1})
    assert other.content != first.content


def test_x_seed_reproduces_a_seedless_request(http: httpx.Client) -> None:
    first = generate(http, text="58", samples=2)
    seed = int(first.headers["x-seed"])
    assert 0 <= seed < 2**63
    assert generate(http, text="58", samples=2, seed=seed).content == first.content
    assert generate(http, text="58", samples=2).headers["x-seed"] != first.headers["x-seed"]


def test_rows_are_independent_writers_and_one_writer_per_row(http: httpx.Client) -> None:
    image = pixels(generate(http, text="11", samples=2, seed=4, temperature=1.0).content)
    assert not np.array_equal(image[:28], image[28:])  # two rows, two styles
    assert np.array_equal(image[:28, :28], image[:28, 28:])  # same digit, same z: the same tile


def test_temperature_zero_is_the_mean_style_whatever_the_seed(http: httpx.Client) -> None:
    a = generate(http, text="6", temperature=0, seed=1).content
    b = generate(http, text="6", temperature=0, seed=2).content
    assert a == b


def test_style_writes_every_tile_with_the_given_z(http: httpx.Client) -> None:
    style = [0.3, -0.2, 1.0, 0.5]
    a = generate(http, text="3 3", samples=2, style=style, seed=1)
    b = generate(http, text="3 3", samples=2, style=style, seed=99, temperature=2)
    assert a.status_code == 200 and a.content == b.content  # seed and temperature do not apply
    image = pixels(a.content)
    assert np.array_equal(image[:28], image[28:]) and np.array_equal(image[:, :28], image[:, 56:])


def test_json_format(http: httpx.Client, active_version: str) -> None:
    response = generate(http, {"format": "json"}, text="90", samples=2, seed=8, scale=2)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "model_version",
        "seed",
        "temperature",
        "width",
        "height",
        "image_png_base64",
        "metrics",
    }
    assert (body["model_version"], body["seed"], body["width"], body["height"]) == (
        active_version,
        8,
        112,
        112,
    )
    assert set(body["metrics"]) == {"inference_ms", "queue_ms", "compute_ms", "batch_size"}
    png = base64.b64decode(body["image_png_base64"])
    assert png == generate(http, text="90", samples=2, seed=8, scale=2).content


def test_version_selects_a_model(http: httpx.Client, active_version: str, other_version: str) -> None:
    active = generate(http, text="5", seed=1)
    other = generate(http, {"version": other_version}, text="5", seed=1)
    assert other.status_code == 200 and other.headers["x-model-version"] == other_version
    assert other.content != active.content  # v0002's weights differ
    explicit = generate(http, {"version": active_version}, text="5", seed=1)
    assert explicit.content == active.content


@pytest.mark.parametrize("version", ["v9999", "latest", "../v0001", "v1"])
def test_unknown_version_is_404(http: httpx.Client, version: str) -> None:
    response = generate(http, {"version": version}, text="5")
    assert response.status_code == 404 and "unknown model version" in response.json()["detail"]


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"text": "\u0663"}, "ASCII digits"),
        ({"text": "\u00b9\u00b2"}, "ASCII digits"),
        ({"text": "12a"}, "ASCII digits"),
        ({"text": "  "}, "at least one digit"),
        ({"text": ""}, "at least 1 character"),
        ({"text": "1" * 33}, "at most 32 characters"),
        ({"text": "1", "samples": 17}, "less than or equal to 16"),
        ({"text": "1", "seed": 2**63}, "less than 9223372036854775808"),
        ({"text": "1", "seed": -1}, "greater than or equal to 0"),
        ({"text": "1", "temperature": 2.5}, "less than or equal to 2"),
        ({"text": "1", "scale": 9}, "less than or equal to 8"),
        ({"text": "1", "invert": "maybe"}, "valid boolean"),
        ({"text": "1", "style": [0.1, 0.2]}, "exactly 4 values"),
        ({"text": 12}, "valid string"),
        ({"samples": 2}, "Field required"),
        ({"text": "1", "unknown": 1}, "Extra inputs"),
    ],
)
def test_invalid_bodies_are_422_with_a_readable_detail(http: httpx.Client, body: dict, fragment: str) -> None:
    response = http.post("/generate", json=body)
    assert response.status_code == 422
    assert fragment in json.dumps(response.json()["detail"])


@pytest.mark.parametrize(
    "raw",
    [
        '{"text": "1", "style": [NaN, 0, 0, 0]}',
        '{"text": "1", "temperature": Infinity}',
        '{"text": "1", "style": [1e400, 0, 0, 0]}',
        '{"text": "1",',
        "[]",
        "null",
    ],
)
def test_nan_infinity_and_broken_json_get_a_serialisable_422(http: httpx.Client, raw: str) -> None:
    response = http.post("/generate", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] and body["request_id"] == response.headers["x-request-id"]


def test_bad_format_query_is_422(http: httpx.Client) -> None:
    response = generate(http, {"format": "gif"}, text="1")
    assert response.status_code == 422 and "'png' or 'json'" in json.dumps(response.json())
