"""Load through the Open Inference Protocol with its reference client, in the way of Triton's perf_analyzer.

Starts the service (`python -m app`, default batching) on a free 127.0.0.1 port and, for each model and
rows-per-request, runs a closed loop at each concurrency: that many `tritonclient.http.aio` clients send
inference requests back to back (binary tensor data, as tritonclient sends by default) for --duration
seconds after a warm-up. It reports requests/s, rows/s, client latency percentiles and, from the server's
/metrics, how many requests and rows shared each forward pass. Figures are printed and, with --write,
written to docs/performance.md (between the oip_load markers) and docs/oip.md.

(perf_analyzer itself, PyPI `perf-analyzer`, is a binary built for glibc 2.38 or newer and does not start
on older systems; see docs/oip.md.)

Run: `python -m benchmarks.oip_load [--registry ./registry] [--duration 5] [--concurrency 1 8 32] [--write]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import torch
import tritonclient.http.aio as triton

from benchmarks.bench_generate import benchmark_registry, server
from benchmarks.bench_report import pct, write_doc
from loadtest.exposition import parse_samples, value
from training.data import load_bundled

REPO = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- oip_load:start -->", "<!-- oip_load:end -->")
OWN_API = (
    "POST /generate (own API)"  # the same one-digit work through the service's own endpoint, for reference
)
SCENARIOS = (
    (OWN_API, 1),
    ("cvae-decoder", 1),
    ("cvae-decoder", 64),
    ("cvae-encoder", 1),
    ("cvae-encoder", 64),
)
GENERATE_BODY = {"text": "7", "seed": 1}
WARM_UP_S = 1.0


@dataclass
class Run:
    """What one (model, rows, concurrency) loop measured."""

    model: str
    rows: int
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    jobs_per_pass: float = float("nan")
    rows_per_pass: float = float("nan")

    def row(self) -> str:
        rps = len(self.latencies_ms) / self.seconds if self.seconds else 0.0
        lat = [pct(self.latencies_ms, q) for q in (50, 95, 99)]
        return (
            f"| {self.model} | {self.rows} | {self.concurrency} | {rps:.0f} | {rps * self.rows:.0f} | "
            + " | ".join(f"{v:.1f}" for v in lat)
            + f" | {self.jobs_per_pass:.1f} | {self.rows_per_pass:.0f} | {self.errors} |"
        )


def inputs_for(model: str, rows: int) -> list[triton.InferInput]:
    """The request of a scenario: seeded decoder rows, or real MNIST digits for the encoder (labels chosen
    by the model: ten network rows per digit)."""
    if model == "cvae-decoder":
        labels = triton.InferInput("labels", [rows], "INT64")
        labels.set_data_from_numpy(np.arange(rows, dtype=np.int64) % 10)
        seeds = triton.InferInput("seed", [rows], "INT64")
        seeds.set_data_from_numpy(np.arange(rows, dtype=np.int64))
        return [labels, seeds]
    pixels = triton.InferInput("pixels", [rows, 28, 28], "UINT8")
    pixels.set_data_from_numpy(np.ascontiguousarray(load_bundled().images[:rows]))
    return [pixels]


def pass_figures(metrics_text: str) -> dict[str, tuple[float, float, float]]:
    """kind -> (forward passes, jobs, rows) so far, from the batcher's histograms."""
    samples = parse_samples(metrics_text)
    kinds = {dict(labels).get("kind", "") for name, labels in samples if name == "cvae_batch_size_count"}
    return {
        kind: (
            value(samples, "cvae_batch_size_count", kind=kind),
            value(samples, "cvae_batch_size_sum", kind=kind),
            value(samples, "cvae_batch_rows_sum", kind=kind),
        )
        for kind in kinds
    }


async def sender(stack: contextlib.AsyncExitStack, url: str, run: Run) -> Callable[[], Awaitable[object]]:
    """A coroutine function sending one request of the scenario (raising on any failure)."""
    if run.model == OWN_API:  # aiohttp, the HTTP stack under tritonclient's asyncio client
        connector = aiohttp.TCPConnector(limit=run.concurrency)
        session = await stack.enter_async_context(aiohttp.ClientSession(url, connector=connector))

        async def generate() -> object:
            async with session.post("/generate", json=GENERATE_BODY) as response:
                await response.read()
                response.raise_for_status()
            return response

        return generate
    client = await stack.enter_async_context(
        triton.InferenceServerClient(url.removeprefix("http://"), conn_limit=run.concurrency)
    )
    request = inputs_for(run.model, run.rows)
    return lambda: client.infer(run.model, request)


async def closed_loop(url: str, run: Run, duration: float) -> None:
    """`run.concurrency` clients sending back to back: warm up, then measure for `duration` seconds."""
    kind = "encode" if run.model == "cvae-encoder" else "decode"
    async with contextlib.AsyncExitStack() as stack:
        send = await sender(stack, url, run)

        async def loop(until: float, record: bool) -> None:
            while time.perf_counter() < until:
                started = time.perf_counter()
                try:
                    await send()
                except Exception:  # noqa: BLE001 - every failure counts, whatever the client raises
                    run.errors += record
                    continue
                if record:
                    run.latencies_ms.append((time.perf_counter() - started) * 1000)

        warm_until = time.perf_counter() + WARM_UP_S
        await asyncio.gather(*(loop(warm_until, False) for _ in range(run.concurrency)))
        before = pass_figures(httpx.get(f"{url}/metrics").text).get(kind, (0.0, 0.0, 0.0))
        started = time.perf_counter()
        await asyncio.gather(*(loop(started + duration, True) for _ in range(run.concurrency)))
        run.seconds = time.perf_counter() - started
        after = pass_figures(httpx.get(f"{url}/metrics").text).get(kind, (0.0, 0.0, 0.0))
    passes = after[0] - before[0]
    if passes:
        run.jobs_per_pass = (after[1] - before[1]) / passes
        run.rows_per_pass = (after[2] - before[2]) / passes


def render(runs: list[Run], setup: dict[str, object]) -> str:
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, Python {platform.python_version()}; "
        f"load average {setup['load_before']:.2f} before, {os.getloadavg()[0]:.2f} after.",
        f"Model: {setup['model']}.",
        f"Generator: `python -m benchmarks.oip_load --duration {setup['duration']:g} --concurrency "
        f"{setup['concurrency']}` (tritonclient {setup['tritonclient']} `http.aio`, "
        "binary tensor data, closed loop after a 1 s warm-up; client and server share the machine). "
        "Decoder requests: `labels` + `seed` per row; encoder requests: `pixels` of real MNIST digits, "
        "labels chosen by the model (ten network rows per digit); for reference, the same one-digit work "
        f"through the service's own API: `POST /generate {json.dumps(GENERATE_BODY)}` (PNG answer) with "
        "aiohttp, the HTTP client under tritonclient's.",
        "",
        "| model | rows/request | concurrency | requests/s | rows/s | p50 ms | p95 ms | p99 ms "
        "| requests per forward pass | network rows per pass | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(run.row() for run in runs),
        "",
    ]
    return "\n".join(lines)


async def measure(url: str, duration: float, concurrency: list[int]) -> list[Run]:
    runs = []
    for model, rows in SCENARIOS:
        for clients in concurrency:
            run = Run(model, rows, clients)
            await closed_loop(url, run, duration)
            print(run.row(), flush=True)
            runs.append(run)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.oip_load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--registry", type=Path, default=REPO / "registry")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per loop")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--write", action="store_true", help="write the figures into the docs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cvae-oip-load-") as scratch:
        registry, model = benchmark_registry(args.registry, Path(scratch))
        setup: dict[str, object] = {
            "load_before": os.getloadavg()[0],
            "model": model,
            "duration": args.duration,
            "concurrency": " ".join(map(str, args.concurrency)),
            "tritonclient": importlib.metadata.version("tritonclient"),
        }
        with server("batched", registry, Path(scratch) / "server.log") as (url, _pid):
            runs = asyncio.run(measure(url, args.duration, args.concurrency))
    figures = render(runs, setup)
    print(figures)
    if args.write:
        block = "## Through the Open Inference Protocol\n\n" + figures
        write_doc(REPO / "docs" / "performance.md", block, markers=MARKERS)
        write_doc(REPO / "docs" / "oip.md", block.replace("## ", "### ", 1), markers=MARKERS)
    return 0 if all(run.errors == 0 for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
