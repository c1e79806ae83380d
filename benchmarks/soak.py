"""Soak test: a bounded number of mixed requests against a real server, watching throughput and memory.

Starts the service (`python -m app`, as benchmarks/bench_generate.py does) on a free 127.0.0.1 port and
sends `--requests` requests over `--connections` keep-alive connections: /generate of random numbers
(1-8 digits, 1-4 rows, random seeds), /encode and /reconstruct of bundled MNIST digits, in the proportions
of `--mix`. Every `--interval` seconds it samples throughput, latency and the server's resident memory
(the process and its workers, from /proc: Linux only). A leak shows as RSS that keeps growing after the
warm-up, so the report gives RSS at the start (after the first 10% of requests), at the end, and the
trend over the second half in MB per 10,000 requests.

Run: `python -m benchmarks.soak --requests 100000` (about 100,000 / throughput seconds; see
docs/reliability.md). Writes soak.json, soak.md and soak.png to `--out` (default reports/soak-<UTC time>).
Exits 1 when a request failed or RSS grew by more than `--max-growth-mb` (when given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.bench_generate import REPO, benchmark_registry, server
from benchmarks.raw_client import post_request
from loadtest.mix import png_bytes
from training.data import load_bundled

KINDS = ("generate", "encode", "reconstruct")
WARM_UP_SHARE = 0.1  # RSS "at the start" is taken once this share of the requests is done


# -- requests ------------------------------------------------------------------------------------
def multipart_request(path: str, png: bytes) -> bytes:
    """The bytes of a keep-alive multipart POST carrying `png` as the `file` field."""
    boundary = "soakboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def digit_pngs(count: int) -> list[bytes]:
    """PNGs of the first `count` bundled MNIST digits."""
    return [png_bytes(image) for image in load_bundled().images[:count]]


def request_pool(mix: dict[str, float], size: int, seed: int) -> list[tuple[str, bytes]]:
    """`size` (kind, request bytes) drawn with the mix's proportions; the soak cycles through them."""
    rng = random.Random(seed)
    pngs = digit_pngs(50)
    pool = []
    for _ in range(size):
        kind = rng.choices(list(mix), weights=list(mix.values()))[0]
        if kind == "generate":
            text = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 8)))
            body = {"text": text, "samples": rng.randint(1, 4), "seed": rng.randrange(2**63)}
            pool.append((kind, post_request("/generate", body)))
        else:
            pool.append((kind, multipart_request(f"/{kind}", rng.choice(pngs))))
    return pool


def content_length(head: bytes) -> int:
    """The Content-Length of a response head (ValueError when it has none)."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("a response without Content-Length")


# -- memory --------------------------------------------------------------------------------------
def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), in MB."""
    total_kib = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:  # the process ended while we looked
            continue
        if status.parent.name == str(pid) or fields.get("PPid", "").strip() == str(pid):
            total_kib += int(fields.get("VmRSS", "0 kB").split()[0])
    return total_kib / 1024


# -- the soak ------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One interval: when, how many requests were done by then, the window's rate and latency, RSS."""

    seconds: float
    done: int
    per_second: float
    p50_ms: float
    p99_ms: float
    rss_mb: float


@dataclass
class Soak:
    """What the soak measured."""

    requests: int
    connections: int
    mix: dict[str, float]
    model: str
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # status (or "transport") -> count
    samples: list[Sample] = field(default_factory=list)
    rss_start_mb: float = 0.0  # after the warm-up share of requests
    rss_end_mb: float = 0.0
    rss_trend_mb_per_10k: float = 0.0  # slope over the second half


class Runner:
    """The client side: connections take requests from one counter until `total` were sent."""

    def __init__(self, port: int, pool: list[tuple[str, bytes]], total: int, pid: int):
        self.port, self.pool, self.total, self.pid = port, pool, total, pid
        self.next = 0
        self.latencies: list[float] = []  # ms, of the current sampling window
        self.done = 0
        self.by_kind = dict.fromkeys(KINDS, 0)
        self.failures: dict[str, int] = {}
        self.rss_at_warm_up: float | None = None

    async def connection(self) -> None:
        reader = writer = None
        while self.next < self.total:
            index, self.next = self.next, self.next + 1
            kind, request = self.pool[index % len(self.pool)]
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                assert reader is not None
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(content_length(head))
                status = int(head[9:12])
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                self.failures["transport"] = self.failures.get("transport", 0) + 1
                print(f"transport error: {exc!r}", file=sys.stderr)
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            self.latencies.append((time.perf_counter() - started) * 1000)
            self.done += 1
            self.by_kind[kind] += 1
            if status != 200:
                self.failures[str(status)] = self.failures.get(str(status), 0) + 1
            if self.rss_at_warm_up is None and self.done >= WARM_UP_SHARE * self.total:
                self.rss_at_warm_up = tree_rss_mb(self.pid)
        if writer is not None:
            writer.close()

    async def sampler(self, interval: float, samples: list[Sample], started: float, report: bool) -> None:
        last_time, last_done = started, 0
        while True:
            await asyncio.sleep(interval)
            now = time.perf_counter()
            samples.append(self.sample(now - started, (self.done - last_done) / (now - last_time)))
            last_time, last_done = now, self.done
            if report:
                s = samples[-1]
                print(
                    f"{s.seconds:7.1f} s {s.done:8d} done {s.per_second:8.0f} req/s "
                    f"p50 {s.p50_ms:6.1f} ms p99 {s.p99_ms:6.1f} ms RSS {s.rss_mb:7.1f} MB",
                    flush=True,
                )

    def sample(self, seconds: float, per_second: float) -> Sample:
        window, self.latencies = sorted(self.latencies), []
        p50 = window[len(window) // 2] if window else 0.0
        p99 = window[min(len(window) - 1, len(window) * 99 // 100)] if window else 0.0
        return Sample(
            round(seconds, 2),
            self.done,
            round(per_second, 1),
            round(p50, 2),
            round(p99, 2),
            round(tree_rss_mb(self.pid), 1),
        )


async def soak(
    port: int, pid: int, pool: list[tuple[str, bytes]], result: Soak, interval: float, quiet: bool
) -> None:
    runner = Runner(port, pool, result.requests, pid)
    started = time.perf_counter()
    sampler = asyncio.create_task(runner.sampler(interval, result.samples, started, not quiet))
    await asyncio.gather(*(runner.connection() for _ in range(result.connections)))
    sampler.cancel()
    result.seconds = round(time.perf_counter() - started, 2)
    result.samples.append(runner.sample(result.seconds, runner.done / max(result.seconds, 1e-9)))
    result.by_kind, result.failures = runner.by_kind, runner.failures
    result.rss_end_mb = result.samples[-1].rss_mb
    result.rss_start_mb = round(runner.rss_at_warm_up or result.samples[0].rss_mb, 1)
    result.rss_trend_mb_per_10k = round(trend(result.samples), 2)


def trend(samples: list[Sample]) -> float:
    """Least-squares slope of RSS against requests done over the second half, in MB per 10,000 requests."""
    half = [s for s in samples if s.done >= samples[-1].done / 2]
    if len(half) < 2 or half[-1].done == half[0].done:
        return 0.0
    mean_x = sum(s.done for s in half) / len(half)
    mean_y = sum(s.rss_mb for s in half) / len(half)
    cov = sum((s.done - mean_x) * (s.rss_mb - mean_y) for s in half)
    var = sum((s.done - mean_x) ** 2 for s in half)
    return cov / var * 10_000


# -- report --------------------------------------------------------------------------------------
def markdown(result: Soak) -> str:
    """The report as a markdown page."""
    growth = result.rss_end_mb - result.rss_start_mb
    lines = [
        f"# Soak: {result.requests:,} mixed requests",
        "",
        f"- model: {result.model}",
        f"- connections: {result.connections}; mix: {result.mix}; done by kind: {result.by_kind}",
        f"- duration: {result.seconds:.1f} s; mean throughput: {result.requests / result.seconds:.0f} req/s",
        f"- failures: {result.failures or 'none'}",
        f"- server RSS: {result.rss_start_mb:.1f} MB after {WARM_UP_SHARE:.0%} of the requests, "
        f"{result.rss_end_mb:.1f} MB at the end ({growth:+.1f} MB); trend over the second half: "
        f"{result.rss_trend_mb_per_10k:+.2f} MB per 10,000 requests",
        "",
        "| time (s) | requests done | req/s | p50 (ms) | p99 (ms) | RSS (MB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.seconds:.1f} | {s.done:,} | {s.per_second:.0f} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | "
        f"{s.rss_mb:.1f} |"
        for s in result.samples
    ]
    return "\n".join(lines) + "\n"


def plot(result: Soak, path: Path) -> None:
    """Throughput and RSS against time, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s.seconds for s in result.samples[:-1]] or [result.seconds]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    top.plot(times, [s.per_second for s in result.samples[:-1]] or [0], marker=".")
    top.set_ylabel("requests / s")
    bottom.plot(times, [s.rss_mb for s in result.samples[:-1]] or [result.rss_end_mb], marker=".", color="C1")
    bottom.set_ylabel("server RSS (MB)")
    bottom.set_xlabel("seconds")
    top.set_title(f"soak: {result.requests:,} mixed requests")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -- command line --------------------------------------------------------------------------------
def parse_mix(text: str) -> dict[str, float]:
    """`generate=0.7,encode=0.15,reconstruct=0.15` -> proportions."""
    mix = {name.strip(): float(share) for name, share in (part.split("=") for part in text.split(","))}
    if not set(mix) <= set(KINDS) or sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError(f"mix must weigh some of {KINDS}")
    return mix


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--mix", type=parse_mix, default=parse_mix("generate=0.7,encode=0.15,reconstruct=0.15")
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--registry",
        type=Path,
        default=REPO / "registry",
        help="serve its active version (else a random-weight default-preset network)",
    )
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--out", type=Path, help="report folder (default reports/soak-<UTC time>)")
    parser.add_argument("--max-growth-mb", type=float, help="exit 1 when RSS grows by more than this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print and write the report; 0 when nothing failed and memory stayed bounded."""
    args = parse_args(argv)
    out = args.out or REPO / "reports" / time.strftime("soak-%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    pool = request_pool(args.mix, 1000, args.seed)
    with tempfile.TemporaryDirectory(prefix="cvae-soak-") as scratch:
        registry, model = benchmark_registry(args.registry, Path(scratch))
        result = Soak(args.requests, args.connections, args.mix, model)
        kind = "batched" if args.workers == 1 else "batched-2w"
        with server(kind, registry, out / "server.log") as (url, pid):
            port = int(url.rsplit(":", 1)[1])
            asyncio.run(soak(port, pid, pool, result, args.interval, args.quiet))
    (out / "soak.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    report = markdown(result)
    (out / "soak.md").write_text(report)
    if not args.no_plot:
        plot(result, out / "soak.png")
    print(report)
    print(f"report: {out}")
    growth = result.rss_end_mb - result.rss_start_mb
    if result.failures:
        print(f"FAILED requests: {result.failures}", file=sys.stderr)
        return 1
    if args.max_growth_mb is not None and growth > args.max_growth_mb:
        print(f"RSS grew by {growth:.1f} MB, over --max-growth-mb {args.max_growth_mb}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
