"""The inference path: a plain object whose methods read decode_request -> predict -> encode_response.

`generate` turns text into rows of (z, digit), `encode` turns a preprocessed IMAGE_SIDE x IMAGE_SIDE
image into rows of (x, label); the rows go through the dynamic batcher (the predict step, one forward
pass shared with other requests) and come back as an image or posterior. Noise is drawn per request
from a generator seeded by the request's seed, so the batch a request lands in never changes it.

A generation's per-request work (noise, rows, painting the tiles, encoding the PNG) runs inside the
batched step on the inference thread (`GenerationJob`), so the event loop only parses, awaits and sends.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from app import imaging, metrics
from app.batching import Batcher, BatchStats
from app.engine import DECODE, ENCODE, Engine
from app.exceptions import InvalidInput
from app.limits import DigitText
from app.model_pool import ModelPool
from model.config import IMAGE_PIXELS, IMAGE_SIDE


@dataclass(frozen=True)
class Generated:
    """A generated image (H, W) float in [0, 1], white on black, its PNG and how it was made."""

    image: np.ndarray
    png: bytes  # the image upscaled by `scale` (and inverted with `invert`), 8-bit grey
    version: str
    seed: int
    temperature: float
    stats: BatchStats


@dataclass(frozen=True)
class Encoded:
    """The posterior of one image under the chosen label, its reconstruction and its ELBO terms."""

    version: str
    label: int
    label_source: Literal["given", "inferred"]
    label_probs: list[float]
    mu: list[float]
    log_var: list[float]
    recon_bce: float
    kl: float
    mse: float
    reconstruction: np.ndarray  # (IMAGE_SIDE, IMAGE_SIDE) float in [0, 1]: the decoder mean at z = mu
    stats: BatchStats

    @property
    def elbo(self) -> float:
        return -(self.recon_bce + self.kl)


@dataclass(frozen=True)
class GenerationPlan:
    """Decoder rows of one request and where each tile goes: (sample row, character column)."""

    z: torch.Tensor  # (N, latent_dim)
    y: torch.Tensor  # (N,)
    cells: list[tuple[int, int]]
    shape: tuple[int, int]  # (samples, len(text)) in tiles


def check_style(style: Sequence[float], latent_dim: int) -> torch.Tensor:
    """The style as a (1, latent_dim) float32 row, or InvalidInput."""
    if len(style) != latent_dim:
        raise InvalidInput(
            f"style must have exactly {latent_dim} values (the model's latent_dim), got {len(style)}"
        )
    if not all(math.isfinite(v) for v in style):
        raise InvalidInput("style values must be finite numbers")
    row = torch.tensor([list(style)], dtype=torch.float32)
    if not torch.isfinite(row).all():  # e.g. 1e200: finite in JSON, infinite as float32
        raise InvalidInput("style values must be within the float32 range (|value| < 3.4e38)")
    return row


def plan_generation(
    text: str, samples: int, seed: int, temperature: float, style: Sequence[float] | None, latent_dim: int
) -> GenerationPlan:
    """decode_request: one z per row (seeded eps * temperature, or the given style) for every digit."""
    style_row = None if style is None else check_style(style, latent_dim)
    return _plan(text, samples, seed, temperature, style_row, latent_dim)


def _plan(
    text: str, samples: int, seed: int, temperature: float, style_row: torch.Tensor | None, latent_dim: int
) -> GenerationPlan:
    # One torch call (the seeded draw); the rest in numpy, which holds the GIL for these few values
    # instead of handing it to the event loop and back at every torch call (same numbers: float32).
    columns = [c for c, ch in enumerate(text) if ch != " "]
    if style_row is not None:
        row_z = style_row.expand(samples, latent_dim).numpy()
    else:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(samples, latent_dim, generator=generator).numpy()  # (samples, L)
        row_z = noise * np.float32(temperature)
    z = torch.from_numpy(np.repeat(row_z, len(columns), axis=0))  # every digit of a row shares its z
    y = torch.from_numpy(np.array([int(text[c]) for c in columns] * samples, dtype=np.int64))
    cells = [(r, c) for r in range(samples) for c in columns]
    return GenerationPlan(z, y, cells, (samples, len(text)))


def paint(plan: GenerationPlan, probs: torch.Tensor) -> np.ndarray:
    """encode_response: place each decoded tile; spaces stay background (0)."""
    rows, cols = plan.shape
    image = np.zeros((rows * IMAGE_SIDE, cols * IMAGE_SIDE), dtype=np.float32)
    tiles = probs.numpy().reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    for (r, c), tile in zip(plan.cells, tiles, strict=True):
        image[r * IMAGE_SIDE : (r + 1) * IMAGE_SIDE, c * IMAGE_SIDE : (c + 1) * IMAGE_SIDE] = tile
    return image


class GenerationJob:
    """One /generate request's work on the inference thread: its rows before the shared forward pass,
    its image and PNG after it."""

    def __init__(
        self,
        text: str,
        samples: int,
        seed: int,
        temperature: float,
        style_row: torch.Tensor | None,
        latent_dim: int,
        scale: int,
        invert: bool,
    ):
        self.text, self.samples, self.seed, self.temperature = text, samples, seed, temperature
        self.style_row, self.latent_dim, self.scale, self.invert = style_row, latent_dim, scale, invert
        self.rows = samples * (len(text) - text.count(" "))
        self.pixels = (samples * len(text)) * (IMAGE_SIDE * scale) ** 2
        self._plan: GenerationPlan | None = None

    def prepare(self) -> tuple[torch.Tensor, ...]:
        """decode_request: the seeded rows (z, y)."""
        self._plan = _plan(
            self.text, self.samples, self.seed, self.temperature, self.style_row, self.latent_dim
        )
        return self._plan.z, self._plan.y

    def finish(self, outputs: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, bytes]:
        """encode_response: the painted image and its PNG."""
        (probs,) = outputs
        assert self._plan is not None
        if self.style_row is not None and not torch.isfinite(probs).all():  # huge styles overflow
            raise InvalidInput("style values this large overflow the model; use values like /encode's mu")
        image = paint(self._plan, probs)
        return image, imaging.to_png(image, scale=self.scale, invert=self.invert)


class Inference:
    """Generate and encode through the model pool and the batcher."""

    def __init__(
        self, pool: ModelPool, batcher: Batcher, default_temperature: float | None, timeout_s: float
    ):
        self.pool = pool
        self.batcher = batcher
        self.default_temperature = default_temperature
        self.timeout_s = timeout_s
        self._digits: dict[str, Any] = {}  # version -> its labelled counter child, made once
        # Seeds of requests that give none: unpredictable enough for handwriting, without a system call
        # per request (they select noise, they protect nothing).
        self._seeds = random.Random(os.urandom(32))

    async def predict(self, engine: Engine, kind: str, *inputs: torch.Tensor) -> tuple[tuple, BatchStats]:
        """The predict step: rows through the batcher, one shared forward pass."""
        return await self.batcher.submit(engine, kind, inputs, self.timeout_s)

    def temperature_for(self, engine: Engine) -> float:
        """The temperature of a request that gives none: the server's setting, else the version's own."""
        return engine.default_temperature if self.default_temperature is None else self.default_temperature

    @staticmethod
    def choose_label(elbo: torch.Tensor, label: int | None, num_classes: int) -> tuple[int, torch.Tensor]:
        """The row whose label explains an image best and the label probabilities: without a label, the
        argmax of the ELBO over the labels and its softmax; with one, that single row and a one-hot."""
        if label is not None:
            return 0, _one_hot(label, num_classes)
        return int(torch.argmax(elbo)), torch.softmax(elbo.double(), dim=0)

    async def generate(
        self,
        text: DigitText,
        samples: int = 1,
        seed: int | None = None,
        temperature: float | None = None,
        style: Sequence[float] | None = None,
        version: str | None = None,
        *,
        scale: int = 1,
        invert: bool = False,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> Generated:
        """Handwriting of `text` (checked by `app.limits.check_text`), `samples` rows, reproducible from
        (seed, parameters, version). The request timeout covers the whole computation; `disconnected`
        completes when the client leaves."""
        deadline = time.perf_counter() + self.timeout_s
        seed = self._seeds.getrandbits(63) if seed is None else seed
        engine = await self.pool.get(version)
        if temperature is None:
            temperature = self.temperature_for(engine)
        style_row = None if style is None else check_style(style, engine.latent_dim)
        job = GenerationJob(text, samples, seed, temperature, style_row, engine.latent_dim, scale, invert)
        (image, png), stats = await self.batcher.run(
            engine,
            DECODE,
            rows=job.rows,
            deadline=deadline,
            prepare=job.prepare,
            finish=job.finish,
            pixels=job.pixels,
            disconnected=disconnected,
        )
        self._digit_counter(engine.version).inc(job.rows)
        return Generated(image, png, engine.version, seed, temperature, stats)

    def _digit_counter(self, version: str) -> Any:
        counter = self._digits.get(version)
        if counter is None:
            counter = self._digits[version] = metrics.DIGITS.labels(version)
        return counter

    async def encode(
        self, pixels: np.ndarray, label: int | None = None, version: str | None = None
    ) -> Encoded:
        """Posterior, reconstruction (z = mu) and ELBO of an image; without a label the CVAE picks it."""
        engine = await self.pool.get(version)
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32).reshape(1, IMAGE_PIXELS))
        labels = torch.arange(engine.num_classes) if label is None else torch.tensor([label])
        rows = x.expand(len(labels), -1).contiguous()  # all labels in ONE pass when inferring
        (mu, log_var, recon_probs, recon, kl), stats = await self.predict(engine, ENCODE, rows, labels)
        elbo = -(recon + kl)
        best, probs = self.choose_label(elbo, label, engine.num_classes)
        reconstruction = recon_probs[best].numpy().reshape(IMAGE_SIDE, IMAGE_SIDE)
        mse = float(np.mean((reconstruction - x.numpy().reshape(IMAGE_SIDE, IMAGE_SIDE)) ** 2))
        result = Encoded(
            version=engine.version,
            label=int(labels[best]),
            label_source="given" if label is not None else "inferred",
            label_probs=[float(p) for p in probs],
            mu=mu[best].tolist(),
            log_var=log_var[best].tolist(),
            recon_bce=float(recon[best]),
            kl=float(kl[best]),
            mse=mse,
            reconstruction=reconstruction,
            stats=stats,
        )
        metrics.UPLOAD_RECON_MSE.labels(engine.version).observe(mse)
        metrics.UPLOAD_NEG_ELBO.labels(engine.version).observe(-result.elbo)
        return result

    async def calibrate(self) -> bool:
        """Time a light and a large generation on the inference thread (no queue, no metrics), so the
        admission estimates start from this machine's speed rather than a guess; False when a request
        came meanwhile and nothing was kept (`Batcher.calibrate`)."""
        engine = await self.pool.get(None)
        jobs = []
        for text, samples, scale in (("42", 1, 1), ("0123456789", 4, 8)):
            job = GenerationJob(text, samples, 0, 1.0, None, engine.latent_dim, scale, False)
            jobs.append((job.rows, job.pixels, job.prepare, job.finish))
        return await self.batcher.calibrate(engine, DECODE, jobs)


def _one_hot(label: int, size: int) -> torch.Tensor:
    probs = torch.zeros(size, dtype=torch.float64)
    probs[label] = 1.0
    return probs
