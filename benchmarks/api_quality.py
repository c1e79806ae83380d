"""Quality seen through the API: what a client of the running service actually gets.

Starts the real service on a free 127.0.0.1 port over the active version of --registry and measures,
with the version's own judge classifier (`<registry>/classifier/<key>`, trained on the same training
split, never on the validation digits used here):

1. label inference (`POST /encode` without a label) on held-out MNIST validation digits uploaded as
   files of many forms: the 28x28 PNG itself, an upscaled black-on-white JPEG, dark strokes on a
   transparent RGBA canvas, GIF, BMP, WebP, 16-bit TIFF, and a grey, unevenly lit "photo";
2. label inference on digits by other writers and another scanner: the UCI optical digits shipped
   with scikit-learn (43 writers, 8x8 after NIST preprocessing; skipped when scikit-learn is absent);
3. handwriting transfer: encode a digit, `POST /generate` "0123456789" with its `mu` as `style`; the
   share of the other nine digits the judge reads as requested;
4. generation at the default temperature: `POST /generate` "0123456789" with 16 samples per seed.

Run: `python -m benchmarks.api_quality [--registry ./registry] [--digits 300]`
"""

from __future__ import annotations

import argparse
import base64
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from benchmarks.bench_generate import server
from model.checkpoint import load_module
from model.digit_classifier import ClassifierConfig, DigitClassifier
from model.registry import Registry
from training.data import load_data, split
from training.judge import CLASSIFIER_DIR

Form = Callable[[np.ndarray], tuple[str, bytes, str]]


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _big(digit: np.ndarray, factor: int) -> Image.Image:
    return Image.fromarray(digit).resize((28 * factor, 28 * factor), Image.BILINEAR)


def _photo(digit: np.ndarray) -> bytes:
    """Dark ink on grey paper lit from one side, with sensor noise, as a JPEG."""
    ink = np.asarray(_big(digit, 6), dtype=np.float32) / 255
    h, w = ink.shape
    light = 150 + 60 * np.linspace(0, 1, w)[None, :] + 20 * np.linspace(0, 1, h)[:, None]
    noise = np.random.default_rng(int(digit.sum())).normal(0, 6, (h, w))
    pixels = np.clip(light * (1 - 0.8 * ink) + noise, 0, 255).astype(np.uint8)
    return _save(Image.fromarray(pixels), "JPEG", quality=85)


def _canvas(digit: np.ndarray) -> bytes:
    """A browser canvas export: black strokes whose alpha is the ink, on transparency."""
    alpha = _big(digit, 8)
    rgba = Image.merge("RGBA", [Image.new("L", alpha.size, 0)] * 3 + [alpha])
    return _save(rgba, "PNG")


FORMS: dict[str, Form] = {
    "png-28x28": lambda d: ("d.png", _save(Image.fromarray(d), "PNG"), "image/png"),
    "jpeg-black-on-white-x4": lambda d: ("d.jpg", _save(_big(255 - d, 4), "JPEG", quality=90), "image/jpeg"),
    "rgba-canvas-x8": lambda d: ("d.png", _canvas(d), "image/png"),
    "gif-x2": lambda d: ("d.gif", _save(_big(d, 2).convert("P"), "GIF"), "image/gif"),
    "bmp": lambda d: ("d.bmp", _save(Image.fromarray(d), "BMP"), "image/bmp"),
    "webp-x3": lambda d: ("d.webp", _save(_big(d, 3), "WEBP", quality=90), "image/webp"),
    "tiff-16bit": lambda d: (
        "d.tif",
        _save(Image.fromarray(d.astype(np.uint16) * 257), "TIFF"),
        "image/tiff",
    ),
    "photo-grey-paper-jpeg": lambda d: ("d.jpg", _photo(d), "image/jpeg"),
}


def judge(registry: Registry, version: str) -> DigitClassifier:
    """The version's evaluation classifier, as recorded in its metadata."""
    key = registry.load(version).metadata["metrics"]["classifier"]["key"]
    model, _ = load_module(
        registry.root / CLASSIFIER_DIR / key, lambda cfg: DigitClassifier(ClassifierConfig.from_dict(cfg))
    )
    return model


def read_tiles(classifier: DigitClassifier, png: bytes) -> np.ndarray:
    """Split a generated PNG into 28x28 tiles (rows x cols) and return the judge's readings."""
    pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32) / 255
    rows, cols = pixels.shape[0] // 28, pixels.shape[1] // 28
    tiles = pixels.reshape(rows, 28, cols, 28).transpose(0, 2, 1, 3).reshape(-1, 784)
    with torch.no_grad():
        return classifier(torch.from_numpy(tiles)).argmax(1).numpy().reshape(rows, cols)


def label_accuracy(client: httpx.Client, digits: np.ndarray, labels: np.ndarray, form: Form) -> float:
    hits = 0
    for digit, label in zip(digits, labels, strict=True):
        name, payload, mime = form(digit)
        answer = client.post("/encode", files={"file": (name, payload, mime)})
        answer.raise_for_status()
        hits += int(answer.json()["label"] == int(label))
    return hits / len(labels)


def other_writers(limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    """UCI optical digits (scikit-learn), 8x8 in 0..16, as uint8 images uploaded at their own size
    (the service's preprocessing scales them up like any other upload); None if absent."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))[:limit]
    images = np.rint(data.images[order] * (255 / 16)).astype(np.uint8)
    return images, data.target[order]


def style_transfer(client, classifier, digits, labels) -> float:
    hits = total = 0
    for digit, label in zip(digits, labels, strict=True):
        mu = client.post("/encode", files={"file": ("d.png", _save(Image.fromarray(digit), "PNG"))}).json()[
            "mu"
        ]
        png = client.post("/generate", json={"text": "0123456789", "style": mu}).content
        read = read_tiles(classifier, png)[0]
        others = [d for d in range(10) if d != int(label)]
        hits += sum(int(read[d] == d) for d in others)
        total += len(others)
    return hits / total


def generation(client, classifier, seeds: int) -> tuple[float, float, list[float]]:
    correct = np.zeros(10)
    count = 0
    temperature = None
    for seed in range(seeds):
        answer = client.post(
            "/generate?format=json", json={"text": "0123456789", "samples": 16, "seed": seed}
        )
        answer.raise_for_status()
        body = answer.json()
        temperature = body.get("temperature")
        read = read_tiles(classifier, base64.b64decode(body["image_png_base64"]))
        correct += (read == np.arange(10)[None, :]).sum(0)
        count += read.shape[0]
    per_digit = (correct / count).tolist()
    return float(np.mean(per_digit)), temperature, per_digit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=Path("registry"))
    parser.add_argument("--digits", type=int, default=300, help="validation digits per upload form")
    parser.add_argument("--styles", type=int, default=100, help="digits whose style writes 0-9")
    parser.add_argument("--seeds", type=int, default=20, help="seeds x 16 samples of 0-9 generated")
    args = parser.parse_args(argv)
    registry = Registry(args.registry)
    version = registry.resolve()
    metadata = registry.load(version).metadata
    data, _ = load_data(metadata["data"]["source"])
    _, val = split(data, metadata["data"]["split"]["val_fraction"], metadata["data"]["split"]["seed"])
    digits, labels = val.images[: args.digits], val.labels[: args.digits]
    classifier = judge(registry, version).eval()
    print(f"version {version}; {len(labels)} held-out validation digits per form")
    with (
        tempfile.TemporaryDirectory() as tmp,
        server("batched", registry.root, Path(tmp) / "log") as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        report(client, classifier, digits, labels, args)


def report(client: httpx.Client, classifier: DigitClassifier, digits, labels, args) -> None:
    """Run every measurement against the running service and print one line each."""
    for name, form in FORMS.items():
        accuracy = label_accuracy(client, digits, labels, form)
        print(f"label inference, {name:24s} {accuracy:.1%}", flush=True)
    writers = other_writers(args.digits * 2)
    if writers is None:
        print("other writers: scikit-learn is not installed (pip install scikit-learn); skipped")
    else:
        accuracy = label_accuracy(client, writers[0], writers[1], FORMS["png-28x28"])
        print(f"label inference, other writers (UCI digits, {len(writers[1])}) {accuracy:.1%}", flush=True)
    n = args.styles
    transfer = style_transfer(client, classifier, digits[:n], labels[:n])
    print(f"handwriting transfer to the 9 other digits ({n} styles) {transfer:.1%}", flush=True)
    overall, temperature, per_digit = generation(client, classifier, args.seeds)
    print(
        f"generation at the default temperature {temperature}: {overall:.1%} "
        f"(worst digit {min(per_digit):.1%}; {args.seeds * 16} per digit)"
    )


if __name__ == "__main__":
    main()
