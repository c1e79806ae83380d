"""The inference path: a plain object whose methods read decode_request -> predict -> encode_response.

`generate` turns text into rows of (z, digit), `encode`/`reconstruct` turn a preprocessed 28x28
image into rows of (x, label); the rows go through the dynamic batcher (the predict step, one forward
pass shared with other requests) and come back as an image or posterior. Noise is drawn per request
from a generator seeded by the request's seed, so the batch a request lands in never changes it.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from app import metrics
from app.batching import Batcher, BatchStats
from app.engine import DECODE, ENCODE, Engine
from app.errors import InvalidInput
from app.model_pool import ModelPool

SIDE = 28
DIGITS = "0123456789"
TEXT_ALPHABET = frozenset(DIGITS + " ")
MAX_TEXT = 32
SEED_LIMIT = 2**63


def check_text(text: str) -> str:
    """The text if it is 1..32 ASCII digits and spaces with at least one digit, else ValueError."""
    if not 1 <= len(text) <= MAX_TEXT:
        raise ValueError(f"text must have 1 to {MAX_TEXT} characters, got {len(text)}")
    bad = next((ch for ch in text if ch not in TEXT_ALPHABET), None)
    if bad is not None:
        raise ValueError(
            f"text may contain only ASCII digits 0-9 and spaces; {bad!r} (U+{ord(bad):04X}) is not allowed"
        )
    if not any(ch in DIGITS for ch in text):
        raise ValueError("text must contain at least one digit")
    return text


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
    label_source: str  # "given" | "inferred"
    label_probs: list[float]
    mu: list[float]
    log_var: list[float]
    recon_bce: float
    kl: float
    mse: float
    reconstruction: np.ndarray  # (28, 28) float in [0, 1]
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
    image = np.zeros((rows * SIDE, cols * SIDE), dtype=np.float32)
    tiles = probs.numpy().reshape(-1, SIDE, SIDE)
    for (r, c), tile in zip(plan.cells, tiles, strict=True):
        image[r * SIDE : (r + 1) * SIDE, c * SIDE : (c + 1) * SIDE] = tile
    return image


class Inference:
    """Generate, encode and reconstruct through the model pool and the batcher."""

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
        text: str,
        samples: int = 1,
        seed: int | None = None,
        temperature: float | None = None,
        style: Sequence[float] | None = None,
        version: str | None = None,
    ) -> Generated:
        """Handwriting of `text`, `samples` rows, reproducible from (seed, parameters, version)."""
        check_text(text)
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
        """Posterior, reconstruction and ELBO of a 28x28 image; without a label the CVAE picks it."""
        engine = await self.pool.get(version)
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32).reshape(1, SIDE * SIDE))
        labels = torch.arange(engine.num_classes) if label is None else torch.tensor([label])
        rows = x.expand(len(labels), -1).contiguous()  # all labels in ONE pass when inferring
        (mu, log_var, recon_probs, recon, kl), stats = await self.predict(engine, ENCODE, rows, labels)
        elbo = -(recon + kl)
        best, probs = self.choose_label(elbo, label, engine.num_classes)
        reconstruction = recon_probs[best].numpy().reshape(SIDE, SIDE)
        mse = float(np.mean((reconstruction - x.numpy().reshape(SIDE, SIDE)) ** 2))
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

    async def reconstruct(
        self, pixels: np.ndarray, label: int | None = None, version: str | None = None
    ) -> Encoded:
        """The decoder mean at z = mu (in `Encoded.reconstruction`), with the same terms as `encode`."""
        return await self.encode(pixels, label, version)


def _one_hot(label: int, size: int) -> torch.Tensor:
    probs = torch.zeros(size, dtype=torch.float64)
    probs[label] = 1.0
    return probs
