"""Helpers shared by the inference routes: PNG rendering off the event loop and timing headers."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np

from app import imaging
from app.batching import BatchStats
from app.schemas import InferenceMetrics

# Encoding a PNG of more pixels than this runs on a worker thread, so big images do not stall the loop.
_INLINE_PNG_PIXELS = 200_000


async def render_png(pixels: np.ndarray, *, scale: int = 1, invert: bool = False) -> bytes:
    """8-bit grayscale PNG of an image in [0, 1], upscaled and optionally inverted."""
    if pixels.size * scale * scale <= _INLINE_PNG_PIXELS:
        return imaging.to_png(pixels, scale=scale, invert=invert)
    return await asyncio.to_thread(imaging.to_png, pixels, scale=scale, invert=invert)


def b64(data: bytes) -> str:
    """Base64 text of bytes, for JSON bodies."""
    return base64.b64encode(data).decode("ascii")


def elapsed_ms(started: float) -> float:
    """Milliseconds since a `time.perf_counter()` reading, rounded for headers."""
    return round((time.perf_counter() - started) * 1000, 3)


def timing(started: float, stats: BatchStats) -> InferenceMetrics:
    """The timing part of the `metrics` block of inference responses."""
    return InferenceMetrics(
        inference_ms=elapsed_ms(started),
        queue_ms=round(stats.queue_ms, 3),
        compute_ms=round(stats.compute_ms, 3),
        batch_size=stats.batch_size,
    )


def timing_headers(version: str, inference_ms: float) -> dict[str, str]:
    """Headers every inference response carries."""
    return {
        "X-Model-Version": version,
        "X-Inference-Ms": f"{inference_ms:.3f}",
        "Server-Timing": f"inference;dur={inference_ms:.3f}",
    }
