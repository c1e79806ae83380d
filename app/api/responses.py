"""Helpers shared by the inference routes (and the /generate fast path): timing blocks and headers, the
one /generate call, the client-disconnect waiter."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable

from starlette.types import Receive

from app.batching import BatchStats
from app.inference import Generated, Inference
from app.schemas import GenerateRequest, InferenceMetrics


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


async def generate_for(
    inference: Inference, body: GenerateRequest, receive: Receive, version: str | None = None
) -> Generated:
    """The one call of a /generate request (the route and the fast path): every field of the body."""
    return await inference.generate(
        body.text,
        body.samples,
        body.seed,
        body.temperature,
        body.style,
        version,
        scale=body.scale,
        invert=body.invert,
        disconnected=until_disconnected(receive),
    )


def generated_headers(result: Generated, inference_ms: float) -> dict[str, str]:
    """Headers of a /generate answer."""
    return {**timing_headers(result.version, inference_ms), "X-Seed": str(result.seed)}


def until_disconnected(receive: Receive) -> Callable[[], Awaitable[None]]:
    """A waiter that returns once the client has gone (call it only after the body was read)."""

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            await asyncio.sleep(
                0.05
            )  # (uvicorn blocks until the disconnect; this only guards a server that would not)

    return wait


def timing_headers(version: str, inference_ms: float) -> dict[str, str]:
    """Headers every inference response carries."""
    return {
        "X-Model-Version": version,
        "X-Inference-Ms": f"{inference_ms:.3f}",
        "Server-Timing": f"inference;dur={inference_ms:.3f}",
    }
