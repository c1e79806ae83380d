"""The models the protocol serves and how each one computes, on the service's model pool and batcher.

Every registry version serves three protocol models:

- `cvae-decoder`: digit `labels` and, per row, either `latents` or a `seed` (and `temperature`) -> the
  images as Bernoulli means (`images`, FP32 in [0, 1]), as the 8-bit grey levels a PNG holds (`pixels`) and
  the latents used. A row with seed s and temperature t is the writer /generate draws from seed s
  (samples 1), so its pixels equal that PNG's.
- `cvae-encoder`: 28x28 digits in the MNIST convention (white ink on black), as `images` (FP32 in [0, 1])
  or `pixels` (UINT8), and optional `labels` (-1 = let the CVAE choose) -> the posterior, the chosen label,
  the label probabilities, the ELBO terms and the reconstruction, by the same rules as /encode.
- `cvae-text`: a number as text ("42") -> the PNG /generate writes for it, and the seed used.

All rows of a request go through the batcher as one job, so a request of many rows and many concurrent
requests share forward passes.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import torch

from app import imaging, metrics
from app.engine import DECODE, ENCODE, Engine
from app.inference import Inference
from app.limits import DigitText, check_text
from app.oip.tensors import DATATYPES, ProtocolError
from model.config import IMAGE_SIDE, NUM_CLASSES

LATENT = "latent_dim"  # a dimension that is the version's latent size
TEMPERATURE_RANGE = (0.0, 2.0)  # as /generate's `temperature`


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: its datatype and the dimensions of one row (after the row dimension)."""

    name: str
    datatype: str
    dims: tuple[int | str, ...] = ()
    optional: bool = False

    def row_dims(self, latent_dim: int) -> tuple[int, ...]:
        """The row's dimensions with LATENT replaced by the version's latent size (-1 when unknown)."""
        return tuple(latent_dim if d == LATENT else int(d) for d in self.dims)


Tensors = dict[str, np.ndarray]
Compute = Callable[[Inference, Engine, Tensors], Awaitable[Tensors]]


@dataclass(frozen=True)
class ModelSpec:
    """A protocol model: its signature, the most rows one request may carry, and its compute step."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_rows: int
    compute: Compute

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)


# -- decoder ---------------------------------------------------------------------------------------------
async def decode(inference: Inference, engine: Engine, inputs: Tensors) -> Tensors:
    """Images of `labels` from the given latents, or from per-row seeded noise as /generate draws it."""
    labels = _labels(inputs["labels"], engine.num_classes, allow_choice=False)
    if "latents" in inputs:
        if "seed" in inputs or "temperature" in inputs:
            raise ProtocolError("give either 'latents' or 'seed'/'temperature', not both")
        z = torch.from_numpy(inputs["latents"])
        if not torch.isfinite(z).all():
            raise ProtocolError("input 'latents' must be finite numbers")
    else:
        z = _seeded_latents(inference, engine, inputs, len(labels))
    (probs,), _ = await inference.predict(engine, DECODE, z, torch.from_numpy(labels))
    if not torch.isfinite(probs).all():  # huge latents overflow the network
        raise ProtocolError("latents this large overflow the model; use values like the encoder's mu")
    metrics.DIGITS.labels(engine.version).inc(len(labels))
    images = probs.numpy().reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    pixels = np.stack([imaging.grey_levels(image) for image in images])
    return {"images": images, "pixels": pixels, "latents": z.numpy()}


def _seeded_latents(inference: Inference, engine: Engine, inputs: Tensors, rows: int) -> torch.Tensor:
    """z = temperature * eps per row, eps drawn from the row's seed exactly as /generate draws a sample."""
    seeds = _seeds(inputs)
    if seeds is None:
        seeds = np.array([secrets.randbits(63) for _ in range(rows)], dtype=np.int64)
    temperatures = _temperatures(inputs)
    if temperatures is None:
        temperatures = np.full(rows, inference.temperature_for(engine), dtype=np.float32)
    z = torch.empty(rows, engine.latent_dim)
    for i, (seed, temperature) in enumerate(zip(seeds.tolist(), temperatures.tolist(), strict=True)):
        generator = torch.Generator().manual_seed(seed)
        z[i] = temperature * torch.randn(1, engine.latent_dim, generator=generator)[0]
    return z


def _seeds(inputs: Tensors) -> np.ndarray | None:
    seeds = inputs.get("seed")
    if seeds is not None and (seeds < 0).any():
        raise ProtocolError("input 'seed' must be non-negative")
    return seeds


def _temperatures(inputs: Tensors) -> np.ndarray | None:
    temperatures = inputs.get("temperature")
    low, high = TEMPERATURE_RANGE
    if (
        temperatures is not None
        and not (np.isfinite(temperatures) & (temperatures >= low) & (temperatures <= high)).all()
    ):
        raise ProtocolError(f"input 'temperature' must be finite numbers from {low:g} to {high:g}")
    return temperatures


# -- encoder ---------------------------------------------------------------------------------------------
async def encode(inference: Inference, engine: Engine, inputs: Tensors) -> Tensors:
    """Posterior, label choice and ELBO terms of each image, by /encode's rules (all rows in one job)."""
    x = _images(inputs)  # (N, 784) in [0, 1]
    given = inputs.get("labels")
    labels = (
        np.full(len(x), -1, dtype=np.int64)
        if given is None
        else _labels(given, engine.num_classes, allow_choice=True)
    )
    classes = np.arange(engine.num_classes)
    row_labels = [classes if label < 0 else np.array([label]) for label in labels.tolist()]
    image_of_row = np.repeat(np.arange(len(x)), [len(r) for r in row_labels])
    rows_x = torch.from_numpy(x[image_of_row])
    rows_y = torch.from_numpy(np.concatenate(row_labels).astype(np.int64))
    (mu, log_var, recon_probs, recon, kl), _ = await inference.predict(engine, ENCODE, rows_x, rows_y)
    out: dict[str, list] = {spec.name: [] for spec in ENCODER_OUTPUTS}
    start = 0
    for i, label in enumerate(labels.tolist()):
        stop = start + len(row_labels[i])
        elbo = -(recon[start:stop] + kl[start:stop])
        best, probs = inference.choose_label(elbo, None if label < 0 else label, engine.num_classes)
        row = start + best
        reconstruction = recon_probs[row].numpy().reshape(IMAGE_SIDE, IMAGE_SIDE)
        mse = float(np.mean((reconstruction - x[i].reshape(IMAGE_SIDE, IMAGE_SIDE)) ** 2))
        terms = (float(recon[row]), float(kl[row]))
        for name, value in (
            ("mu", mu[row].numpy()),
            ("log_var", log_var[row].numpy()),
            ("label", int(rows_y[row])),
            ("label_probs", probs.numpy()),
            ("elbo", -(terms[0] + terms[1])),
            ("recon_bce", terms[0]),
            ("kl", terms[1]),
            ("mse", mse),
            ("reconstruction", reconstruction),
        ):
            out[name].append(value)
        metrics.UPLOAD_RECON_MSE.labels(engine.version).observe(mse)
        metrics.UPLOAD_NEG_ELBO.labels(engine.version).observe(sum(terms))
        start = stop
    return {spec.name: np.array(out[spec.name], dtype=DATATYPES[spec.datatype]) for spec in ENCODER_OUTPUTS}


def _images(inputs: Tensors) -> np.ndarray:
    """(N, 784) float32 in [0, 1] from FP32 `images` or UINT8 `pixels` (exactly one of them)."""
    if ("images" in inputs) == ("pixels" in inputs):
        raise ProtocolError("give exactly one of 'images' (FP32 in [0, 1]) and 'pixels' (UINT8)")
    if "pixels" in inputs:  # the grey levels /encode reads from a 28x28 PNG: k / 255
        x = inputs["pixels"].astype(np.float32) / np.float32(255)
    else:
        x = inputs["images"]
        if not (np.isfinite(x) & (x >= 0) & (x <= 1)).all():
            raise ProtocolError("input 'images' must hold numbers from 0 to 1 (white ink on black)")
    return np.ascontiguousarray(x.reshape(len(x), IMAGE_SIDE * IMAGE_SIDE), dtype=np.float32)


def _labels(values: np.ndarray, num_classes: int, *, allow_choice: bool) -> np.ndarray:
    low = -1 if allow_choice else 0
    if ((values < low) | (values >= num_classes)).any():
        choice = " or -1 (let the model choose)" if allow_choice else ""
        raise ProtocolError(f"input 'labels' must hold digits 0 to {num_classes - 1}{choice}")
    return values.astype(np.int64)


# -- text ------------------------------------------------------------------------------------------------
async def write_text(inference: Inference, engine: Engine, inputs: Tensors) -> Tensors:
    """The PNG /generate writes for each text (one row of handwriting), and the seed it used."""
    texts = [_text(value) for value in inputs["text"].tolist()]
    seeds, temperatures = _seeds(inputs), _temperatures(inputs)
    results = await asyncio.gather(
        *(
            inference.generate(
                text,
                seed=None if seeds is None else int(seeds[i]),
                temperature=None if temperatures is None else float(temperatures[i]),
                version=engine.version,
            )
            for i, text in enumerate(texts)
        )
    )
    pngs = np.empty(len(results), dtype=object)
    pngs[:] = [result.png for result in results]  # encoded in the batched step, as for /generate
    return {"png": pngs, "seed": np.array([result.seed for result in results], dtype=np.int64)}


def _text(value: bytes) -> DigitText:
    try:
        return check_text(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"input 'text': {exc}") from None


# -- the models ------------------------------------------------------------------------------------------
IMAGE = (IMAGE_SIDE, IMAGE_SIDE)
ENCODER_OUTPUTS = (
    TensorSpec("mu", "FP32", (LATENT,)),
    TensorSpec("log_var", "FP32", (LATENT,)),
    TensorSpec("label", "INT64"),
    TensorSpec("label_probs", "FP64", (NUM_CLASSES,)),
    TensorSpec("elbo", "FP64"),
    TensorSpec("recon_bce", "FP32"),
    TensorSpec("kl", "FP32"),
    TensorSpec("mse", "FP32"),
    TensorSpec("reconstruction", "FP32", IMAGE),
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "cvae-decoder",
            inputs=(
                TensorSpec("labels", "INT64"),
                TensorSpec("latents", "FP32", (LATENT,), optional=True),
                TensorSpec("seed", "INT64", optional=True),
                TensorSpec("temperature", "FP32", optional=True),
            ),
            outputs=(
                TensorSpec("images", "FP32", IMAGE),
                TensorSpec("pixels", "UINT8", IMAGE),
                TensorSpec("latents", "FP32", (LATENT,)),
            ),
            max_rows=512,  # as many tiles as /generate's largest sheet (16 samples of 32 characters)
            compute=decode,
        ),
        ModelSpec(
            "cvae-encoder",
            inputs=(
                TensorSpec("images", "FP32", IMAGE, optional=True),
                TensorSpec("pixels", "UINT8", IMAGE, optional=True),
                TensorSpec("labels", "INT64", optional=True),
            ),
            outputs=ENCODER_OUTPUTS,
            max_rows=256,  # up to 2,560 rows of the batcher when every label is chosen by the model
            compute=encode,
        ),
        ModelSpec(
            "cvae-text",
            inputs=(
                TensorSpec("text", "BYTES"),
                TensorSpec("seed", "INT64", optional=True),
                TensorSpec("temperature", "FP32", optional=True),
            ),
            outputs=(TensorSpec("png", "BYTES"), TensorSpec("seed", "INT64")),
            max_rows=16,
            compute=write_text,
        ),
    )
}
