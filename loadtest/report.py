"""The load-test report: `summary.json`, `summary.md` and PNG plots in one directory.

`summary.json` is the machine-readable record (client = Locust, server = Prometheus); `summary.md` puts
the two sides next to each other for a person; the plots show throughput, latency and batching over time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402

from loadtest.prom import RangeSeries  # noqa: E402

COUNT_TOLERANCE = 0.03  # Locust and Prometheus counts may differ by this fraction at most


def agreement(client: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    """How far the two sides' request counts are apart."""
    seen_client, seen_server = float(client["requests"]), float(server["requests"])
    diff = abs(seen_client - seen_server) / max(seen_client, 1.0)
    return {
        "request_count_diff_pct": round(100 * diff, 3),
        "tolerance_pct": 100 * COUNT_TOLERANCE,
        "within_tolerance": diff <= COUNT_TOLERANCE,
    }


def finite(value: Any) -> Any:
    """`value` with every NaN or infinity (an empty histogram, a +Inf bucket) replaced by None."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary(run: dict[str, Any], client: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    """The whole record written to summary.json."""
    return finite(
        {
            "run": run,
            "client": client,
            "server": server,
            "mean_batch_size": server.get("mean_batch_size"),
            "agreement": agreement(client, server),
            "plots": ["throughput.png", "latency.png", "batching.png"],
        }
    )


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def _side_by_side(record: dict[str, Any]) -> list[str]:
    client, server = record["client"], record["server"]
    rows = [
        ("requests", "requests", 0),
        ("failures (non-2xx)", "failures", 0),
        ("requests per second", "rps", 1),
        ("p50 latency (ms)", "p50_ms", 1),
        ("p95 latency (ms)", "p95_ms", 1),
        ("p99 latency (ms)", "p99_ms", 1),
    ]
    lines = ["| figure | Locust (client side) | Prometheus (server side) |", "| --- | ---: | ---: |"]
    lines += [
        f"| {label} | {_fmt(client.get(key), d)} | {_fmt(server.get(key), d)} |" for label, key, d in rows
    ]
    lines.append(
        f"| error rate | {_fmt(client['failures'] / max(client['requests'], 1) * 100, 2)} % "
        f"| {_fmt(server['error_rate'] * 100, 2)} % |"
    )
    return lines


def _endpoints(record: dict[str, Any]) -> list[str]:
    lines = [
        "| endpoint | Locust requests | Prometheus requests | Locust p50 / p95 / p99 ms "
        "| Prometheus p50 / p95 / p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, srv in record["server"]["by_endpoint"].items():
        cli = record["client"]["by_endpoint"].get(name, {})
        lines.append(
            f"| /{name} | {_fmt(cli.get('requests'), 0)} | {_fmt(srv.get('requests'), 0)} "
            f"| {' / '.join(_fmt(cli.get(k)) for k in ('p50_ms', 'p95_ms', 'p99_ms'))} "
            f"| {' / '.join(_fmt(srv.get(k)) for k in ('p50_ms', 'p95_ms', 'p99_ms'))} |"
        )
    return lines


def markdown(record: dict[str, Any]) -> str:
    """summary.md: the two sides next to each other, then batching and the plots."""
    run, server, agree = record["run"], record["server"], record["agreement"]
    lines = [
        f"# Load test {run['started_at']}",
        "",
        f"{run['users']} users (spawn rate {run['spawn_rate']}/s) for {run['duration_s']} s against "
        f"`{run['target']}`, model version `{run.get('model_version') or '?'}`, "
        f"{run.get('workers') or '?'} worker(s). Mix: ~70% /generate, 15% /encode, 15% /reconstruct.",
        "",
        "## Client side (Locust) and server side (Prometheus)",
        "",
        *_side_by_side(record),
        "",
        f"Request counts differ by {agree['request_count_diff_pct']} % "
        f"({'within' if agree['within_tolerance'] else 'OUTSIDE'} the "
        f"{agree['tolerance_pct']:.0f} % tolerance). "
        "Client latency includes the network stack and Locust's own scheduling; server latency is the "
        "service's histogram, so its percentiles are interpolated within bucket bounds.",
        "",
        "## By endpoint",
        "",
        *_endpoints(record),
        "",
        "## Batching, queue and compute (server side)",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| mean batch size (requests per forward pass) | {_fmt(server.get('mean_batch_size'), 2)} |",
        f"| forward passes (batches) | {_fmt(server.get('batches'), 0)} |",
        f"| queue wait per request, mean / p95 (ms) | {_fmt(server.get('queue_wait_mean_ms'), 2)} / "
        f"{_fmt(server.get('queue_wait_p95_ms'), 2)} |",
        f"| compute per batch, mean / p95 (ms) | {_fmt(server.get('compute_mean_ms'), 2)} / "
        f"{_fmt(server.get('compute_p95_ms'), 2)} |",
        f"| 5xx answers | {_fmt(server.get('errors_5xx'), 0)} |",
        "",
        "## Over time",
        "",
        "![throughput](throughput.png)",
        "",
        "![latency](latency.png)",
        "",
        "![batching](batching.png)",
        "",
    ]
    return "\n".join(lines)


def _series(data: RangeSeries, t0: float) -> tuple[list[float], list[float]]:
    if not data:
        return [], []
    points = data[0][1]
    return [t - t0 for t, _ in points], [v for _, v in points]


def _finish(fig: Any, ax: Any, path: Path, ylabel: str) -> None:
    ax.set_xlabel("seconds since start")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


History = dict[str, list[float]]
Plotted = dict[str, RangeSeries]


def plot_throughput(path: Path, t0: float, history: History, series: Plotted) -> None:
    """Requests per second over time, seen by Locust and by Prometheus."""
    fig, ax = plt.subplots(figsize=(8, 4))
    ts = [t + 0.5 - t0 for t in history["rate_t"]]  # Locust counts whole seconds: plot mid-second
    ax.plot(ts, history["rate_rps"], label="Locust requests/s", marker=".")
    ax.plot(*_series(series["rps"], t0), label="Prometheus rate(cvae_requests_total)")
    ax.plot(ts, history["rate_fails"], label="Locust failures/s", color="tab:red")
    ax.set_title("Throughput")
    _finish(fig, ax, path, "requests per second")


def plot_latency(path: Path, t0: float, history: History, series: Plotted) -> None:
    """Latency percentiles over time, from Locust and from the service's histogram."""
    fig, ax = plt.subplots(figsize=(8, 4))
    ts = [t - t0 for t in history["t"]]
    ax.plot(ts, history["p50_ms"], "--", label="Locust p50", color="tab:blue")
    ax.plot(ts, history["p95_ms"], "--", label="Locust p95", color="tab:orange")
    for name, color in (("p50_ms", "tab:blue"), ("p95_ms", "tab:orange"), ("p99_ms", "tab:red")):
        ax.plot(*_series(series[name], t0), label=f"server {name[:-3]}", color=color)
    ax.set_title("Latency")
    _finish(fig, ax, path, "milliseconds")


def plot_batching(path: Path, t0: float, series: dict[str, RangeSeries]) -> None:
    """Mean batch size, and queue wait against compute time, over time."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(*_series(series["mean_batch_size"], t0), label="mean batch size")
    top.plot(*_series(series["in_flight"], t0), label="requests in flight", alpha=0.7)
    top.set_title("Dynamic batching")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize="small")
    bottom.plot(*_series(series["queue_wait_ms"], t0), label="queue wait per request (mean)")
    bottom.plot(*_series(series["compute_ms"], t0), label="compute per batch (mean)")
    _finish(fig, bottom, path, "milliseconds")


def write(
    directory: Path,
    record: dict[str, Any],
    history: dict[str, list[float]],
    series: dict[str, RangeSeries],
    t0: float,
) -> None:
    """Write summary.json, summary.md and the three plots into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(record, indent=2, allow_nan=False, default=str) + "\n")
    (directory / "summary.md").write_text(markdown(record))
    plot_throughput(directory / "throughput.png", t0, history, series)
    plot_latency(directory / "latency.png", t0, history, series)
    plot_batching(directory / "batching.png", t0, series)
