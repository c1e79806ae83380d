"""Tables of the /generate benchmark, printed and written into docs/performance.md."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from benchmarks.hey import Run

START, END = "<!-- bench_generate:start -->", "<!-- bench_generate:end -->"

# The targets of the performance issue, checked in the verdict lines.
TARGET_RATIO = 3.0  # 64-client req/s over the plain implementation's
TARGET_P50_RATIO = 0.8  # one-client p50 over the plain implementation's
TARGET_CPU_MS = 0.5  # server CPU per request at 64 clients
TARGET_SHED_P99_MS = 50.0  # 503 answers in the overload burst


@dataclass
class Overload:
    """What the overload burst measured."""

    requests: int
    clients: int
    deadline_s: float
    hey: Run | None = None
    raw: list[tuple[int, str | None, float]] = field(default_factory=list)  # status, Retry-After, s
    readyz: list[tuple[int, float]] = field(default_factory=list)  # status, s
    light: list[tuple[int, float]] = field(default_factory=list)
    floor: Run | None = None  # the same hey burst against the refuse-only uvicorn server
    floor_haproxy: Run | None = None  # ... and against HAProxy refusing at once (None: not installed)


@dataclass
class Result:
    """Every phase against one server."""

    single: Run
    loaded: Run = field(default_factory=Run)
    cpu_ms: float = float("nan")
    heavy: Run = field(default_factory=Run)
    overload: Overload | None = None


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _ms(values: list[float], q: float) -> str:
    """The q-th percentile in ms, "-" when there is none (e.g. a burst that refused nothing)."""
    return f"{pct(values, q) * 1000:.2f}" if values else "-"


def _s(values: list[float], q: float) -> str:
    """The q-th percentile in s, "-" when there is none."""
    return f"{pct(values, q):.3f}" if values else "-"


def _main_table(results: dict[str, Result], clients: int) -> list[str]:
    lines = [
        f"| server | 1 client p50 ms | p99 | req/s | {clients} clients req/s | p50 ms | p99 | "
        "server CPU ms/req | non-200 | heavy p50 s | heavy max s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        ok = r.single.times(200)
        loaded = r.loaded.times(200)
        errors = len(r.loaded.statuses) - len(loaded) + r.loaded.missing
        heavy = r.heavy.times(200)
        lines.append(
            f"| {kind} | {_ms(ok, 50)} | {_ms(ok, 99)} | {r.single.rps:.0f} | {r.loaded.rps:.0f} | "
            f"{_ms(loaded, 50)} | {_ms(loaded, 99)} | {r.cpu_ms:.3f} | {errors} | "
            f"{_s(heavy, 50)} | {_s(heavy, 100)} |"
        )
    return lines


def _overload_lines(o: Overload) -> list[str]:
    lines = [
        f"Overload: {o.requests} heavy requests from {o.clients} clients (deadline {o.deadline_s:g} s):",
        "",
    ]
    if o.hey is not None:
        shed, ok = o.hey.times(503), o.hey.times(200)
        other = len(o.hey.statuses) - len(shed) - len(ok)
        late = sum(1 for t in ok if t > o.deadline_s)
        lines += [
            "| client | 200 | 503 | other / no answer | 503 p50 ms | 503 p99 ms | 503 max ms | 200 max s "
            "| 200 past the deadline | 503 with Retry-After |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| hey | {len(ok)} | {len(shed)} | {other} / {o.hey.missing} | {_ms(shed, 50)} | "
            f"{_ms(shed, 99)} | {_ms(shed, 100)} | {_s(ok, 100)} | {late} | "
            "(hey shows no headers) |",
        ]
    if o.raw:
        shed = [s for status, _, s in o.raw if status == 503]
        ok = [s for status, _, s in o.raw if status == 200]
        other = len(o.raw) - len(shed) - len(ok)
        retry = sum(1 for status, after, _ in o.raw if status == 503 and after)
        late = sum(1 for t in ok if t > o.deadline_s)
        lines.append(
            f"| raw_client | {len(ok)} | {len(shed)} | {other} / {o.requests - len(o.raw)} | "
            f"{_ms(shed, 50)} | {_ms(shed, 99)} | {_ms(shed, 100)} | "
            f"{_s(ok, 100)} | {late} | {retry} of {len(shed)} |"
        )
    for name, floor in (("floor server", o.floor), ("HAProxy", o.floor_haproxy)):
        if floor is not None:
            shed = floor.times(503)
            lines.append(
                f"| hey, {name} (refuses at once) | {floor.count(200)} | {len(shed)} | "
                f"{len(floor.statuses) - len(shed) - floor.count(200)} / {floor.missing} | "
                f"{_ms(shed, 50)} | {_ms(shed, 99)} | {_ms(shed, 100)} | | | |"
            )
    ready = [s for _, s in o.readyz]
    light_ok = [s for status, s in o.light if status == 200]
    lines += [
        "",
        f"During the hey burst, every 100 ms: /readyz answered {_statuses(o.readyz)} "
        f"(max {_ms(ready, 100)} ms); a light `/generate` answered {_statuses(o.light)} "
        f"(200s: p50 {_ms(light_ok, 50)} ms, max {_ms(light_ok, 100)} ms).",
    ]
    return lines


def _statuses(samples: list[tuple[int, float]]) -> str:
    counts: dict[int, int] = {}
    for status, _ in samples:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n}x {status or 'no answer'}" for status, n in sorted(counts.items())) or "nothing"


def _verdicts(results: dict[str, Result], clients: int) -> list[str]:
    ours, plain = results.get("project"), results.get("plain")
    lines = []
    if ours and plain and plain.loaded.rps:
        ratio = ours.loaded.rps / plain.loaded.rps
        p50 = pct(ours.single.times(200), 50) / pct(plain.single.times(200), 50)
        lines += [
            f"- {clients} clients: project / plain throughput = **{ratio:.2f}x** "
            f"(target >= {TARGET_RATIO:g}x)",
            f"- 1 client: project p50 / plain p50 = **{p50:.2f}** (target <= {TARGET_P50_RATIO:g})",
        ]
    if ours:
        lines.append(
            f"- server CPU per request at {clients} clients: **{ours.cpu_ms:.3f} ms** "
            f"(target <= {TARGET_CPU_MS:g})"
        )
    if ours and ours.overload and ours.overload.hey:
        o = ours.overload
        shed = o.hey.times(503) + [s for status, _, s in o.raw if status == 503]
        late = sum(1 for t in o.hey.times(200) if t > o.deadline_s)
        late += sum(1 for status, _, t in o.raw if status == 200 and t > o.deadline_s)
        lines.append(
            f"- overload: 503 p99 **{_ms(shed, 99)} ms** over both bursts (target <= "
            f"{TARGET_SHED_P99_MS:g}), accepted answers past the deadline: **{late}**, "
            f"/readyz non-200: **{sum(1 for s, _ in o.readyz if s != 200)}**"
        )
        if o.floor is not None:
            lines.append(
                f"- the same hey burst against a server that refuses at once (benchmarks/floor_server.py): "
                f"503 p99 **{_ms(o.floor.times(503), 99)} ms** (uvicorn)"
                + (
                    f", **{_ms(o.floor_haproxy.times(503), 99)} ms** (HAProxy)"
                    if o.floor_haproxy is not None
                    else ""
                )
                + ": the floor of this machine and load generator"
            )
    return lines


def render(results: dict[str, Result], setup: dict[str, Any]) -> str:
    """The benchmark's markdown: set-up, the table, the overload figures, the verdicts."""
    args = setup["args"]
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, Python {platform.python_version()}, "
        f"both servers' model on {setup['device']}; load average (1/5/15 min) {setup['load']}.",
        f"Model: {setup['model']}.",
        f"Load generator: `hey` (one client: `-n {args.requests} -c 1`; loaded: `-c {args.clients} "
        f"-z {args.duration:g}s`; heavy: `-n {args.heavy_requests} -c 1`). Light request `POST /generate "
        f"{setup['light']}`, heavy `{setup['heavy']}`. Servers started with the settings `make serve` uses; "
        "load generator and server share the machine.",
        "",
        *_main_table(results, args.clients),
        "",
    ]
    ours = results.get("project")
    if ours and ours.overload:
        lines += [*_overload_lines(ours.overload), ""]
    lines += _verdicts(results, args.clients)
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
