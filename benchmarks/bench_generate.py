"""Benchmark of POST /generate {"text": "42"}: the batched service against naive baselines.

Starts real uvicorn servers on free 127.0.0.1 ports over the same model, measures one client in
sequence and then many concurrent clients for a bounded time, prints the figures and writes them to
docs/performance.md (between its bench_generate markers). Servers:

- `batched`: the service (`python -m app`) with its default batching settings.
- `naive`: benchmarks/naive_server.py, one forward pass per request in a synchronous endpoint.
- `unbatched`: the service itself with max_batch_size=1 and no wait (batching alone switched off).
- `batched-2w` (extra, not the baseline comparison): the service with CVAE_WORKERS=2, one event loop
  per core, to show the deployable capacity of the machine.

Two load generators: httpx.AsyncClient (what an application would use) and benchmarks/raw_client.py
(a minimal asyncio HTTP/1.1 client). On a 2-core machine httpx itself saturates a core at a few
hundred requests per second, so only the raw client shows what the servers can do.

The model is the active version of --registry when there is one, else a freshly built network of the
default preset with random weights (timing does not depend on the weights; the output says which).

Run: `python -m benchmarks.bench_generate [--registry ./registry] [--duration 10] [--clients 64]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks.bench_report import Phase, render, write_doc
from benchmarks.raw_client import hammer, post_request
from loadtest.processes import free_port
from loadtest.server import APP_COMMAND, start_server
from model.checkpoint import save_checkpoint
from model.config import preset
from model.network import CVAE
from model.registry import Registry

REPO = Path(__file__).resolve().parents[1]
BODY = {"text": "42"}


# -- model and servers ---------------------------------------------------------------------------
def benchmark_registry(requested: Path, scratch: Path) -> tuple[Path, str]:
    """The registry to serve, and a sentence saying which model it holds."""
    registry = Registry(requested)
    try:
        active = registry.active_version()
    except Exception:  # noqa: BLE001 - an unusable registry means: build a model
        active = None
    if active is not None:
        config = registry.load(active).model.config.to_dict()
        return requested, f"active version {active} of {requested}, config {config}"
    torch.manual_seed(0)
    built = Registry(scratch / "registry")
    with built.staging() as staging:
        save_checkpoint(staging, CVAE(preset("default")), extra={"note": "random weights for benchmarking"})
    built.promote(built.publish(staging))
    return built.root, (
        f"no active version in {requested}: a fresh default-preset network {preset('default').to_dict()} "
        "with RANDOM weights"
    )


SERVER_SETTINGS: dict[str, dict[str, Any]] = {  # CVAE_* settings of the service kinds
    "unbatched": {"max_batch_size": 1, "max_batch_wait_ms": 0},
    "batched-2w": {"workers": 2},
}


@contextmanager
def server(kind: str, registry: Path, log: Path) -> Iterator[tuple[str, int]]:
    """Start one server kind; yields (base URL, pid)."""
    port = free_port()
    command: Sequence[str] = APP_COMMAND
    if kind == "naive":
        command = (sys.executable, "-m", "benchmarks.naive_server", str(registry), str(port))
    settings = {"log_level": "warning", **SERVER_SETTINGS.get(kind, {})}
    with start_server(
        registry, port=port, command=command, log_path=log, timeout_s=120, **settings
    ) as started:
        yield started.base_url, started.process.pid


# -- load phases ---------------------------------------------------------------------------------
async def _timed_post(client: httpx.AsyncClient, phase: Phase) -> None:
    started = time.perf_counter()
    try:
        response = await client.post("/generate", json=BODY)
    except httpx.HTTPError:
        phase.errors += 1
        return
    if response.status_code != 200:
        phase.errors += 1
        return
    phase.client_ms.append((time.perf_counter() - started) * 1000)
    phase.server_ms.append(float(response.headers["x-inference-ms"]))


async def sequential(url: str, count: int) -> Phase:
    """One httpx client, one request at a time (after 20 warm-up requests)."""
    phase = Phase()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(20):
            await client.post("/generate", json=BODY)
        started = time.perf_counter()
        for _ in range(count):
            await _timed_post(client, phase)
        phase.seconds = time.perf_counter() - started
    return phase


async def concurrent_httpx(url: str, clients: int, seconds: float) -> Phase:
    """`clients` httpx loops sending back to back for `seconds`."""
    phase = Phase()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(client.post("/generate", json=BODY) for _ in range(clients)))  # connect
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            while time.perf_counter() < deadline:
                await _timed_post(client, phase)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        phase.seconds = time.perf_counter() - started
    return phase


def concurrent_raw(url: str, clients: int, seconds: float) -> Phase:
    """`clients` raw keep-alive connections sending back to back for `seconds`."""
    port = int(url.rsplit(":", 1)[1])
    sink, elapsed = asyncio.run(hammer("127.0.0.1", port, post_request("/generate", BODY), clients, seconds))
    phase = Phase(seconds=elapsed)
    for status, client_ms, server_ms in sink:
        if status != 200:
            phase.errors += 1
            continue
        phase.client_ms.append(client_ms)
        phase.server_ms.append(server_ms)
    return phase


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the service's decode batch-size histogram; (0, 0) without /metrics."""
    total = count = 0.0
    response = httpx.get(url + "/metrics")
    for line in response.text.splitlines() if response.status_code == 200 else []:
        if line.startswith('cvae_batch_size_sum{kind="decode"}'):
            total = float(line.split()[-1])
        elif line.startswith('cvae_batch_size_count{kind="decode"}'):
            count = float(line.split()[-1])
    return total, count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children (uvicorn workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1] is the parent pid
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def loaded(url: str, pid: int, run: Callable[[], Phase]) -> Phase:
    """A concurrent phase, with the mean batch size and the server's CPU time per request added."""
    (sum_before, count_before), cpu_before = batch_stats(url), cpu_seconds(pid)
    phase = run()
    cpu = cpu_seconds(pid) - cpu_before
    sum_after, count_after = batch_stats(url)
    batches = count_after - count_before
    phase.mean_batch = (sum_after - sum_before) / batches if batches else 1.0
    phase.cpu_ms = cpu * 1000 / max(1, len(phase.client_ms))
    return phase


def measure(kind: str, registry: Path, args: argparse.Namespace, log: Path) -> dict[str, Phase]:
    """The three phases against one server kind."""
    with server(kind, registry, log) as (url, pid):
        return {
            "single": asyncio.run(sequential(url, args.requests)),
            "httpx": loaded(
                url, pid, lambda: asyncio.run(concurrent_httpx(url, args.clients, args.duration))
            ),
            "raw": loaded(url, pid, lambda: concurrent_raw(url, args.clients, args.duration)),
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registry", type=Path, default=Path("registry"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each concurrent phase")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300, help="requests of the one-client phase")
    parser.add_argument("--servers", default="batched,naive,unbatched,batched-2w")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "performance.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cvae-bench-") as scratch:
        registry, model = benchmark_registry(args.registry, Path(scratch))
        print(f"model: {model}", flush=True)
        results = {}
        for kind in args.servers.split(","):
            print(f"measuring {kind} ...", flush=True)
            results[kind] = measure(kind, registry, args, Path(scratch) / f"{kind}.log")
    setup = {
        "model": model,
        "body": BODY,
        "requests": args.requests,
        "clients": args.clients,
        "duration": f"{args.duration:g}",
        "load": f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
    }
    text = render(results, setup)
    print(text)
    write_doc(args.output, text)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
