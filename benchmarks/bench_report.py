"""Tables of the /generate benchmark, printed and written into docs/performance.md."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

START, END = "<!-- bench_generate:start -->", "<!-- bench_generate:end -->"


@dataclass
class Phase:
    """What one load phase measured."""

    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    mean_batch: float = 1.0
    cpu_ms: float = float("nan")  # server CPU time per answered request

    @property
    def rps(self) -> float:
        return len(self.client_ms) / self.seconds if self.seconds else 0.0


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _single_row(kind: str, p: Phase) -> str:
    cells = [pct(p.server_ms, 50), pct(p.server_ms, 95), pct(p.server_ms, 99)]
    cells += [pct(p.client_ms, 50), pct(p.client_ms, 95), pct(p.client_ms, 99)]
    return f"| {kind} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {p.rps:.0f} |"


def _loaded_row(kind: str, p: Phase) -> str:
    cells = [pct(p.server_ms, 50), pct(p.server_ms, 99), pct(p.client_ms, 50), pct(p.client_ms, 95)]
    cells += [pct(p.client_ms, 99), p.mean_batch, p.cpu_ms]
    return f"| {kind} | {p.rps:.0f} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {p.errors} |"


SINGLE_HEAD = [
    "| server | server p50 ms | p95 | p99 | client p50 ms | p95 | p99 | req/s |",
    "|---|---|---|---|---|---|---|---|",
]
LOADED_HEAD = [
    "| server | req/s | server p50 ms | p99 | client p50 ms | p95 | p99 | mean batch | server CPU ms/req "
    "| errors |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def render(results: dict[str, dict[str, Phase]], setup: dict[str, object]) -> str:
    """The benchmark's markdown: set-up, one-client table, one table per load generator, verdicts."""
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, Python {platform.python_version()}; "
        f"load average {setup['load']}.",
        f"Model: {setup['model']}.",
        f"Request: `POST /generate {json.dumps(setup['body'])}`. "
        "Load generators and servers share the machine.",
        "",
        f"One client (httpx, {setup['requests']} requests in sequence; server = `X-Inference-Ms`):",
        "",
        *SINGLE_HEAD,
        *(_single_row(kind, r["single"]) for kind, r in results.items()),
    ]
    for client, title in (("httpx", "httpx.AsyncClient"), ("raw", "benchmarks/raw_client.py")):
        lines += [
            "",
            f"{setup['clients']} concurrent clients ({title}, back to back for {setup['duration']} s):",
            "",
        ]
        lines += [*LOADED_HEAD, *(_loaded_row(kind, r[client]) for kind, r in results.items())]
    p50 = pct(results["batched"]["single"].server_ms, 50)
    lines += ["", f"- batched, one client, server-side p50: **{p50:.2f} ms** (target <= 5 ms)"]
    pairs = [("batched", "naive"), ("batched", "unbatched"), ("batched-2w", "naive")]
    for client in ("httpx", "raw"):
        for ours, base in pairs:
            if ours in results and base in results and results[base][client].rps:
                ratio = results[ours][client].rps / results[base][client].rps
                lines.append(
                    f"- {setup['clients']} clients, {client} load: {ours} / {base} throughput "
                    f"= **{ratio:.2f}x**"
                )
    lines.append("- target: batched / naive >= 3x")
    return "\n".join(lines) + "\n"


def write_doc(path: Path, figures: str, markers: tuple[str, str] = (START, END)) -> None:
    """Replace the measured block of the page (between the markers), keeping everything else."""
    START, END = markers  # noqa: N806 - the module's markers unless others are given
    block = f"{START}\n{figures}{END}"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    else:
        new = (old.rstrip() + "\n\n" if old else "# Performance\n\n") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")
