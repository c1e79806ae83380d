"""The inference path: a plain object whose methods read decode_request -> predict -> encode_response.

`generate` turns text into rows of (z, digit), `encode` turns a preprocessed IMAGE_SIDE x IMAGE_SIDE
image into rows of (x, label); the rows go through the dynamic batcher (the predict step, one forward
pass shared with other requests) and come back as an image or posterior. Noise is drawn per request
from a generator seeded by the request's seed, so the batch a request lands in never changes it.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from app import metrics
from app.batching import Batcher, BatchStats
from app.engine import DECODE, ENCODE, Engine
from app.exceptions import InvalidInput
from app.limits import DigitText
from app.model_pool import ModelPool
from model.config import IMAGE_PIXELS, IMAGE_SIDE


@dataclass(frozen=True)
class Generated:
    """A generated image (H, W) float in [0, 1], white on black, and how it was made."""

    image: np.ndarray
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


def plan_generation(
    text: str, samples: int, seed: int, temperature: float, style: Sequence[float] | None, latent_dim: int
) -> GenerationPlan:
    """decode_request: one z per row (seeded eps * temperature, or the given style) for every digit."""
    if style is not None:
        if len(style) != latent_dim:
            raise InvalidInput(
                f"style must have exactly {latent_dim} values (the model's latent_dim), got {len(style)}"
            )
        if not all(math.isfinite(v) for v in style):
            raise InvalidInput("style values must be finite numbers")
        row_z = torch.tensor([list(style)], dtype=torch.float32)
        if not torch.isfinite(row_z).all():  # e.g. 1e200: finite in JSON, infinite as float32
            raise InvalidInput("style values must be within the float32 range (|value| < 3.4e38)")
        row_z = row_z.expand(samples, latent_dim)
    else:
        generator = torch.Generator().manual_seed(seed)
        row_z = temperature * torch.randn(samples, latent_dim, generator=generator)  # (samples, L)
    cells = [(r, c) for r in range(samples) for c, ch in enumerate(text) if ch != " "]
    labels = [int(text[c]) for _, c in cells]
    z = row_z[[r for r, _ in cells]].contiguous()
    return GenerationPlan(z, torch.tensor(labels, dtype=torch.long), cells, (samples, len(text)))


def paint(plan: GenerationPlan, probs: torch.Tensor) -> np.ndarray:
    """encode_response: place each decoded tile; spaces stay background (0)."""
    rows, cols = plan.shape
    image = np.zeros((rows * IMAGE_SIDE, cols * IMAGE_SIDE), dtype=np.float32)
    tiles = probs.numpy().reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    for (r, c), tile in zip(plan.cells, tiles, strict=True):
        image[r * IMAGE_SIDE : (r + 1) * IMAGE_SIDE, c * IMAGE_SIDE : (c + 1) * IMAGE_SIDE] = tile
    return image


class Inference:
    """Generate and encode through the model pool and the batcher."""

    def __init__(
        self, pool: ModelPool, batcher: Batcher, default_temperature: float | None, timeout_s: float
    ):
        self.pool = pool
        self.batcher = batcher
        self.default_temperature = default_temperature
        self.timeout_s = timeout_s

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
    ) -> Generated:
        """Handwriting of `text` (checked by `app.limits.check_text`), `samples` rows, reproducible from
        (seed, parameters, version)."""
        seed = secrets.randbits(63) if seed is None else seed
        engine = await self.pool.get(version)
        if temperature is None:
            temperature = self.temperature_for(engine)
        plan = plan_generation(text, samples, seed, temperature, style, engine.latent_dim)
        (probs,), stats = await self.predict(engine, DECODE, plan.z, plan.y)
        if style is not None and not torch.isfinite(probs).all():  # huge style values overflow the network
            raise InvalidInput("style values this large overflow the model; use values like /encode's mu")
        metrics.DIGITS.labels(engine.version).inc(len(plan.cells))
        return Generated(paint(plan, probs), engine.version, seed, temperature, stats)

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


def _one_hot(label: int, size: int) -> torch.Tensor:
    probs = torch.zeros(size, dtype=torch.float64)
    probs[label] = 1.0
    return probs
