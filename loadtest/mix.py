"""The traffic mix of the load test, without Locust (importing Locust monkey-patches the process).

Texts a person might ask for, the JSON bodies of /generate, and real digits to upload: the bundled MNIST
training digits as PNG files.
"""

from __future__ import annotations

import io
import random
from functools import cache

import numpy as np
from PIL import Image

from training.data import load_bundled

SAMPLES_CHOICES = (1, 1, 1, 1, 2, 2, 3, 4, 8)  # mostly single rows, now and then a sheet


def random_text(rng: random.Random) -> str:
    """A number a person might ask for: a digit, a year, a PIN, a phone number with a space."""
    kind = rng.random()
    if kind < 0.3:
        return str(rng.randrange(10))
    if kind < 0.6:
        return str(rng.randrange(1900, 2100))
    if kind < 0.85:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 8)))
    return f"{rng.randrange(1000):03d} {rng.randrange(10000):04d}"


def generate_body(rng: random.Random) -> dict[str, object]:
    """The JSON body of one /generate request."""
    body: dict[str, object] = {"text": random_text(rng), "samples": rng.choice(SAMPLES_CHOICES)}
    if rng.random() < 0.5:
        body["seed"] = rng.randrange(2**31)
    if rng.random() < 0.3:
        body["temperature"] = round(rng.uniform(0.3, 1.2), 2)
    return body


def png_bytes(image: np.ndarray) -> bytes:
    """A (28, 28) uint8 array as an 8-bit grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@cache
def digit_uploads(count: int = 256, seed: int = 0) -> list[tuple[bytes, int]]:
    """PNG files and labels of `count` real digits chosen by `seed`, built once per process."""
    data = load_bundled()
    rng = np.random.default_rng(seed)
    index = rng.choice(len(data), size=min(count, len(data)), replace=False)
    return [(png_bytes(data.images[i]), int(data.labels[i])) for i in index]
