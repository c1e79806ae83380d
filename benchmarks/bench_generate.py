"""Benchmark of POST /generate: the service as `make serve` runs it against the plain implementation.

Starts real servers on free 127.0.0.1 ports over the same model, one after the other, and drives them
with the standard HTTP load generator `hey` (Debian package `hey`):

- `project`: the service, `python -m app` with no setting changed (what `make serve` runs).
- `plain`: benchmarks/naive_server.py, the same contract in a plain synchronous FastAPI endpoint, one
  forward pass per request, no batching.

Phases, each server in turn: one client in sequence (`hey -c 1`), 64 clients back to back for
--duration seconds (`hey -c 64 -z`; the server's CPU time of all its processes from /proc divided by
the requests it answered), the heavy request (32 digits x 16 samples x scale 8) from one client, and
for the project the overload burst: 1,500 heavy requests from 300 clients (`hey -n 1500 -c 300`)
while /readyz and a light /generate are polled every 100 ms. `hey` does not show response headers, so
the same burst is sent a second time by benchmarks/raw_client.py, which checks that every 503 carries
Retry-After. Last, the same `hey` burst against the floor servers of benchmarks/floor_server.py,
which answer 503 at once without any work: uvicorn with as many workers, then (when it is installed)
HAProxy with as many threads. What they measure is the machine and the load generator alone.

The model is the active version of --registry when there is one, else a freshly built network of the
default preset with random weights (timing does not depend on the weights; the output says which).
Both servers run it on --device (default $CVAE_DEVICE, else auto: CUDA when present, as `make serve`);
a device this machine lacks stops the benchmark before any server starts.

Run: `make bench` or `python -m benchmarks.bench_generate [--registry ./registry] [--duration 10]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import torch

from app.settings import Settings
from benchmarks import hey
from benchmarks.bench_report import Overload, Result, render, write_doc
from benchmarks.floor_server import haproxy_floor
from benchmarks.raw_client import burst, post_request
from loadtest.fleet import haproxy_binary
from loadtest.processes import StartError, free_port
from loadtest.server import APP_COMMAND, start_server
from model.checkpoint import save_checkpoint
from model.device import DeviceError, resolve_device
from model.network import CVAE
from model.registry import Registry
from training.presets import preset

REPO = Path(__file__).resolve().parents[1]
LIGHT = {"text": "42"}
HEAVY = {"text": "0123456789" * 3 + "01", "samples": 16, "scale": 8}
DEADLINE_S = Settings.model_fields["request_timeout_s"].default  # the default request deadline


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
    "project": {"workers": "auto"},  # what `make serve` runs: every setting at its default
    "floor": {"workers": "auto"},  # the refuse-only server: as many workers as the project
    "batched": {"workers": 1},  # one worker (the soak and the quality tools)
    "batched-2w": {"workers": 2},
}


@contextmanager
def server(kind: str, registry: Path, log: Path, device: str = "auto") -> Iterator[tuple[str, int]]:
    """Start one server kind with the settings `make serve` uses, the model on `device` (the plain
    server's too); yields (base URL, pid)."""
    port = free_port()
    command: Sequence[str] = APP_COMMAND
    settings = {**SERVER_SETTINGS.get(kind, {}), "device": device}
    if kind == "plain":
        command = (sys.executable, "-m", "benchmarks.naive_server", str(registry), str(port), device)
    elif kind == "floor":
        command = (sys.executable, "-m", "benchmarks.floor_server", str(port))
    with start_server(
        registry, port=port, command=command, log_path=log, timeout_s=120, **settings
    ) as started:
        yield started.base_url, started.process.pid


def device_name(device: torch.device) -> str:
    """`cpu`, or the accelerator with its name (`cuda (NVIDIA H200)`)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live descendants (uvicorn workers)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        parents[int(stat.parent.name)] = int(fields[1])
        ticks[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
    family = {pid}
    while True:
        more = {child for child, parent in parents.items() if parent in family} - family
        if not more:
            break
        family |= more
    return sum(ticks.get(p, 0) for p in family) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, idle_share: float = 0.1, timeout_s: float = 90.0) -> None:
    """Wait until the server's processes use less than `idle_share` of a CPU over a second: every
    worker has started (imports, model, calibration), so none of that is measured."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < idle_share:
            return


# -- phases --------------------------------------------------------------------------------------
def measure(kind: str, registry: Path, args: argparse.Namespace, log: Path) -> Result:
    """Every phase against one server kind."""
    with server(kind, registry, log, args.device) as (url, pid):
        generate = f"{url}/generate"
        settle(pid)  # /readyz answers once one worker is up; the others may still be loading
        hey.hey(generate, LIGHT, clients=8, requests=400)  # warm-up
        result = Result(single=hey.hey(generate, LIGHT, clients=1, requests=args.requests))
        cpu_before = cpu_seconds(pid)
        result.loaded = hey.hey(generate, LIGHT, clients=args.clients, duration_s=args.duration)
        result.cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / max(1, result.loaded.count(200))
        result.heavy = hey.hey(generate, HEAVY, clients=1, requests=args.heavy_requests)
        if kind == "project" and args.burst:
            result.overload = overload(url, args)
    return result


def floor_bursts(
    registry: Path, args: argparse.Namespace, log: Path, device: torch.device
) -> tuple[hey.Run, hey.Run | None]:
    """The same burst (`hey`) against the servers of benchmarks/floor_server.py, which refuse everything
    at once: uvicorn with the project's worker count on `device`, then HAProxy with as many threads
    (None when HAProxy is not installed)."""
    with server("floor", registry, log, args.device) as (url, pid):
        settle(pid)
        uvicorn_floor = _burst(url, args)
    try:
        haproxy_binary()
    except StartError as missing:
        print(f"no HAProxy floor: {missing}", flush=True)
        return uvicorn_floor, None
    threads = Settings(**SERVER_SETTINGS["floor"]).worker_count(cuda=device.type == "cuda")
    with haproxy_floor(free_port(), threads) as url:
        return uvicorn_floor, _burst(url, args)


def _burst(url: str, args: argparse.Namespace) -> hey.Run:
    return hey.hey(f"{url}/generate", HEAVY, clients=args.burst_clients, requests=args.burst, timeout_s=60)


def overload(url: str, args: argparse.Namespace) -> Overload:
    """The heavy burst with `hey` (statuses, times), /readyz and a light request polled beside it, then
    the same burst from the raw client (Retry-After of every 503)."""
    figures = Overload(requests=args.burst, clients=args.burst_clients, deadline_s=DEADLINE_S)
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(url, stop, figures), daemon=True)
    poller.start()
    try:
        figures.hey = _burst(url, args)
    finally:
        stop.set()
        poller.join()
    port = int(url.rsplit(":", 1)[1])
    request = post_request("/generate", HEAVY)
    figures.raw = asyncio.run(burst("127.0.0.1", port, request, args.burst_clients, args.burst))
    return figures


def _poll(url: str, stop: threading.Event, figures: Overload) -> None:
    """Every 100 ms: GET /readyz and a light POST /generate, recording status and seconds."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.wait(0.1):
            for sink, call in (
                (figures.readyz, lambda: client.get("/readyz")),
                (figures.light, lambda: client.post("/generate", json=LIGHT)),
            ):
                started = time.perf_counter()
                try:
                    status = call().status_code
                except httpx.HTTPError:
                    status = 0
                sink.append((status, time.perf_counter() - started))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registry", type=Path, default=Path("registry"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the 64-client phase")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=1000, help="requests of the one-client phase")
    parser.add_argument("--heavy-requests", type=int, default=5, help="heavy requests from one client")
    parser.add_argument(
        "--burst", type=int, default=1500, help="heavy requests of the overload burst (0: none)"
    )
    parser.add_argument("--burst-clients", type=int, default=300)
    parser.add_argument("--servers", default="project,plain")
    parser.add_argument(
        "--device",
        default=os.environ.get("CVAE_DEVICE", "auto"),
        help="the model's device in both servers: auto (CUDA when present), cpu, cuda[:N] "
        "($CVAE_DEVICE, else auto)",
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "performance.md")
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/performance.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    hey.require()
    try:
        device = resolve_device(args.device)  # a missing GPU stops it here, before any server starts
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uptime_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="cvae-bench-") as scratch:
        registry, model = benchmark_registry(args.registry, Path(scratch))
        print(f"model: {model}", flush=True)
        results = {}
        for kind in args.servers.split(","):
            print(f"measuring {kind} ...", flush=True)
            results[kind] = measure(kind, registry, args, Path(scratch) / f"{kind}.log")
        overloaded = results.get("project")
        if overloaded is not None and overloaded.overload is not None:
            print("measuring the floor (servers that refuse at once) ...", flush=True)
            floors = floor_bursts(registry, args, Path(scratch) / "floor.log", device)
            overloaded.overload.floor, overloaded.overload.floor_haproxy = floors
    setup = {
        "model": model,
        "args": args,
        "load": f"{' '.join(uptime_before)} before, "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} after",
        "light": LIGHT,
        "heavy": HEAVY,
        "device": device_name(device),
    }
    text = render(results, setup)
    print(text)
    if not args.no_write:
        write_doc(args.output, text)
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
