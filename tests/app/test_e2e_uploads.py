"""POST /encode and /reconstruct against the real server: every upload form, every upload error."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.builders.images import digit_png, encode, png_declaring

pytestmark = pytest.mark.timeout(120)


def photo_like(digit: np.ndarray, seed: int = 0) -> bytes:
    """Black ink on unevenly lit grey paper with noise, 280x280, as a JPEG: like a phone photo."""
    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((280, 280), Image.BILINEAR), dtype=np.float32) / 255
    light = np.linspace(0.95, 0.7, 280, dtype=np.float32)[None, :] * np.linspace(1.0, 0.85, 280)[:, None]
    paper = light * 235 + rng.normal(0, 4, (280, 280))
    photo = np.clip(paper * (1 - 0.8 * ink), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(photo), "JPEG", quality=85)


def post(
    http: httpx.Client,
    path: str,
    data: bytes,
    name: str = "d.png",
    mime: str = "image/png",
    params: dict | None = None,
    **fields: object,
) -> httpx.Response:
    form = {k: str(v) for k, v in fields.items()}
    return http.post(path, files={"file": (name, data, mime)}, data=form, params=params or {})


def unpng(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


# -- /encode -------------------------------------------------------------------------------------
def test_encode_with_a_given_label(http: httpx.Client, mnist, active_version: str) -> None:  # noqa: ANN001
    images, labels = mnist
    response = post(http, "/encode", digit_png(images[0]), label=int(labels[0]))
    assert response.status_code == 200 and response.headers["x-model-version"] == active_version
    body = response.json()
    assert set(body) == {
        "model_version",
        "label",
        "label_source",
        "label_probs",
        "latent_dim",
        "mu",
        "log_var",
        "metrics",
    }
    assert (body["label"], body["label_source"], body["latent_dim"]) == (int(labels[0]), "given", 4)
    assert len(body["mu"]) == len(body["log_var"]) == 4 and len(body["label_probs"]) == 10
    assert body["label_probs"][int(labels[0])] == 1.0
    m = body["metrics"]
    assert m["elbo"] == pytest.approx(-(m["recon_bce"] + m["kl"]), abs=1e-6)
    assert m["recon_bce"] > 0 and m["kl"] >= 0 and m["inference_ms"] > 0


def test_encode_infers_the_label_from_the_elbo(http: httpx.Client, mnist) -> None:  # noqa: ANN001
    images, labels = mnist
    correct = 0
    for image, label in zip(images[:40], labels[:40], strict=True):
        body = post(http, "/encode", digit_png(image)).json()
        assert body["label_source"] == "inferred" and sum(body["label_probs"]) == pytest.approx(1.0)
        assert body["label"] == int(np.argmax(body["label_probs"]))
        correct += body["label"] == int(label)
    assert correct >= 16  # a seconds-trained 4-d model; chance is 4 of 40


def test_the_posterior_of_an_upload_writes_other_digits(http: httpx.Client, mnist) -> None:  # noqa: ANN001
    images, _ = mnist
    mu = post(http, "/encode", digit_png(images[1])).json()["mu"]
    response = http.post("/generate", json={"text": "0123", "style": mu})
    assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (112, 28)


# -- /reconstruct --------------------------------------------------------------------------------
def test_reconstruct_png_and_headers(http: httpx.Client, mnist, active_version: str) -> None:  # noqa: ANN001
    images, labels = mnist
    response = post(http, "/reconstruct", digit_png(images[2]), label=int(labels[2]), scale=3)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (84, 84) and image.mode == "L"
    h = response.headers
    assert (h["x-label"], h["x-label-source"], h["x-model-version"]) == (
        str(labels[2]),
        "given",
        active_version,
    )
    assert float(h["x-elbo"]) == pytest.approx(-(float(h["x-recon-bce"]) + float(h["x-kl"])), abs=1e-3)
    assert 0 < float(h["x-mse"]) < 0.25


def test_reconstruct_json_shows_the_input_the_model_saw(http: httpx.Client, mnist) -> None:  # noqa: ANN001
    images, _ = mnist
    response = post(http, "/reconstruct", digit_png(images[3]), params={"format": "json"}, invert="true")
    body = response.json()
    assert response.status_code == 200 and body["label_source"] == "inferred"
    assert (body["width"], body["height"]) == (28, 28)
    assert np.array_equal(unpng(body["input_png_base64"]), images[3])  # MNIST passes through byte for byte
    recon = unpng(body["image_png_base64"])
    assert recon.shape == (28, 28) and recon[0, 0] > 200  # inverted: white background
    assert set(body["metrics"]) >= {"elbo", "recon_bce", "kl", "mse", "inference_ms"}
    assert response.headers["x-label"] == str(body["label"])


def test_reconstruct_is_deterministic(http: httpx.Client, mnist) -> None:  # noqa: ANN001
    data = digit_png(mnist[0][4])
    assert post(http, "/reconstruct", data).content == post(http, "/reconstruct", data).content


def test_reconstruct_with_another_version(http: httpx.Client, mnist, other_version: str) -> None:  # noqa: ANN001
    response = post(http, "/reconstruct", digit_png(mnist[0][5]), params={"version": other_version})
    assert response.status_code == 200 and response.headers["x-model-version"] == other_version
    missing = post(http, "/reconstruct", digit_png(mnist[0][5]), params={"version": "v4242"})
    assert missing.status_code == 404


# -- upload forms --------------------------------------------------------------------------------
def _ink_correlation(seen: np.ndarray, original: np.ndarray) -> float:
    return float(np.corrcoef(seen.astype(float).ravel(), original.astype(float).ravel())[0, 1])


@pytest.mark.parametrize("form", ["gif", "rgba", "photo", "jpeg-large", "bmp", "webp", "tiff"])
def test_every_upload_form_becomes_the_digit(http: httpx.Client, mnist, form: str) -> None:  # noqa: ANN001
    digit = mnist[0][6]
    big = Image.fromarray(digit).resize((112, 112), Image.NEAREST)
    if form == "gif":
        data, mime = encode(big, "GIF"), "image/gif"
    elif form == "rgba":  # a canvas export: dark strokes on transparency
        rgba = np.zeros((112, 112, 4), dtype=np.uint8)
        rgba[..., 3] = np.asarray(big)
        data, mime = encode(Image.fromarray(rgba, "RGBA"), "PNG"), "image/png"
    elif form == "photo":
        data, mime = photo_like(digit), "image/jpeg"
    elif form == "jpeg-large":
        data, mime = encode(big.resize((1000, 1000)).convert("RGB"), "JPEG"), "image/jpeg"
    else:
        data, mime = encode(big, form.upper()), f"image/{form}"
    response = post(http, "/reconstruct", data, name=f"d.{form}", mime=mime, params={"format": "json"})
    assert response.status_code == 200, response.text
    seen = unpng(response.json()["input_png_base64"])
    assert seen.shape == (28, 28) and _ink_correlation(seen, digit) > 0.6


# -- upload errors -------------------------------------------------------------------------------
def test_a_6mb_upload_is_413(http: httpx.Client) -> None:
    response = post(http, "/encode", b"\x89PNG" + b"\0" * 6_000_000)
    assert response.status_code == 413 and "5000000 byte limit" in response.json()["detail"]


def test_a_chunked_body_without_content_length_is_413(http: httpx.Client) -> None:
    boundary = "cvaeboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body():  # noqa: ANN202 - a generator: httpx sends it chunked
        yield head
        for _ in range(100):
            yield b"\0" * 65536

    response = http.post(
        "/encode", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 413 and response.json()["detail"].startswith("request body larger")


@pytest.mark.parametrize("size", [(50_000, 50_000), (5_000, 5_000)])
def test_decompression_bombs_are_413_before_decoding(http: httpx.Client, size: tuple[int, int]) -> None:
    data = png_declaring(*size, b"\0" * (size[0] + 1) * 64)  # and the first 64 rows, deflated
    assert len(data) < 200_000
    response = post(http, "/encode", data)
    assert response.status_code == 413, response.text
    assert "pixels" in response.json()["detail"].lower()


@pytest.mark.parametrize(
    "name,data,mime,status",
    [
        ("d.txt", b"hello, this is text", "text/plain", 415),
        (
            "d.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><path d="M1 1L9 9"/></svg>',
            "image/svg+xml",
            415,
        ),
        ("empty.png", b"", "image/png", 415),  # imaging calls an empty file unsupported
    ],
)
def test_unsupported_and_empty_files(
    http: httpx.Client, name: str, data: bytes, mime: str, status: int
) -> None:
    response = post(http, "/encode", data, name=name, mime=mime)
    assert response.status_code == status and "PNG, JPEG, BMP, GIF, WebP or TIFF" in response.json()["detail"]


def test_a_truncated_png_is_422(http: httpx.Client, mnist) -> None:  # noqa: ANN001
    big = encode(Image.fromarray(mnist[0][7]).resize((200, 200)), "PNG")
    response = post(http, "/encode", big[: len(big) // 2])
    assert response.status_code == 422 and "truncated" in response.json()["detail"].lower()


def test_a_blank_image_is_422(http: httpx.Client) -> None:
    response = post(http, "/reconstruct", encode(Image.new("L", (64, 64), 255), "PNG"))
    assert response.status_code == 422 and "digit" in response.json()["detail"].lower()


@pytest.mark.parametrize("label", ["10", "-1", "seven", "1.5"])
def test_a_bad_label_is_422(http: httpx.Client, mnist, label: str) -> None:  # noqa: ANN001
    response = post(http, "/encode", digit_png(mnist[0][0]), label=label)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "label"]


def test_a_missing_file_is_422(http: httpx.Client) -> None:
    response = http.post("/encode", data={"label": "3"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "file"]


@pytest.mark.parametrize("field,value", [("scale", "0"), ("scale", "9"), ("invert", "perhaps")])
def test_bad_reconstruct_options_are_422(http: httpx.Client, mnist, field: str, value: str) -> None:  # noqa: ANN001
    response = post(http, "/reconstruct", digit_png(mnist[0][0]), **{field: value})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", field]
