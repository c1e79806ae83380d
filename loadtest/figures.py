"""The figures of a load test: client side from Locust's files, server side from Prometheus.

Locust's counts and percentiles come from its final JSON stats (its CSV summary can be written before
the last users have stopped); its latency over time comes from the per-second history CSV.

Server-side counts are raw counter values at a scrape after Locust stopped minus those at a scrape before
it started, so they count exactly the requests Locust sent (no extrapolation). Latency percentiles come
from the service's histograms through `histogram_quantile` over the same window.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.prom import PromClient, RangeSeries

# Metric names are those of app/metrics.py.
REQUESTS = "cvae_requests_total"
LATENCY = "cvae_request_duration_seconds"
QUEUE_WAIT = "cvae_queue_wait_seconds"
COMPUTE = "cvae_compute_seconds"
BATCH_SIZE = "cvae_batch_size"
IN_FLIGHT = "cvae_requests_in_flight"
ENDPOINTS = ("generate", "encode", "reconstruct")
# The inference endpoints Locust calls; /metrics, /readyz and the like are not part of the figures.
SELECTOR = 'endpoint=~"/?(generate|encode|reconstruct)"'
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Window:
    """The Locust run [start, end] and the scrapes that bracket it (unix seconds)."""

    start: float
    end: float
    before: float  # a scrape before the first request
    after: float  # a scrape after the last answer

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1e-9)

    @property
    def range_ms(self) -> str:
        """The PromQL range covering both bracketing scrapes."""
        return f"{math.ceil((self.after - self.before) * 1000) + 1}ms"


def _num(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def percentile_ms(response_times: dict[str, int], fraction: float) -> float | None:
    """Locust's own percentile of a {rounded ms: count} histogram (as in its reports)."""
    total = sum(response_times.values())
    if total == 0:
        return None
    wanted, processed = int(total * fraction), 0
    for key in sorted(response_times, key=float, reverse=True):
        processed += response_times[key]
        if total - processed <= wanted:
            return float(key)
    return float(min(response_times, key=float))


def _merged(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One Locust stats entry adding up several (the "Aggregated" row)."""
    times: Counter[str] = Counter()
    for entry in entries:
        times.update({str(k): int(v) for k, v in entry["response_times"].items()})
    return {
        "num_requests": sum(e["num_requests"] for e in entries),
        "num_failures": sum(e["num_failures"] for e in entries),
        "total_response_time": sum(e["total_response_time"] for e in entries),
        "max_response_time": max((e["max_response_time"] or 0 for e in entries), default=0),
        "response_times": dict(times),
    }


def _client_entry(entry: dict[str, Any], seconds: float) -> dict[str, float | None]:
    requests = float(entry["num_requests"])
    return {
        "requests": requests,
        "failures": float(entry["num_failures"]),
        "rps": requests / seconds,
        **{f"p{round(q * 100)}_ms": percentile_ms(entry["response_times"], q) for q in QUANTILES},
        "mean_ms": entry["total_response_time"] / requests if requests else None,
        "max_ms": float(entry["max_response_time"] or 0),
    }


def load_locust_json(path: Path) -> list[dict[str, Any]]:
    """Locust's final stats (`--json-file`): one entry per endpoint, written after the last answer."""
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of Locust stats entries")
    return entries


def client_figures(entries: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Locust's totals and percentiles, overall and by endpoint, over `seconds` of load."""
    figures: dict[str, Any] = dict(_client_entry(_merged(entries), seconds))
    figures["by_endpoint"] = {e["name"].strip("/"): _client_entry(e, seconds) for e in entries}
    return figures


def client_rate(entries: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Requests and failures Locust counted in each second: {"t": [...], "rps": [...], "fails": [...]}."""
    requests: Counter[int] = Counter()
    failures: Counter[int] = Counter()
    for entry in entries:
        requests.update({int(t): int(n) for t, n in entry.get("num_reqs_per_sec", {}).items()})
        failures.update({int(t): int(n) for t, n in entry.get("num_fail_per_sec", {}).items()})
    seconds = sorted(requests)
    return {
        "t": [float(t) for t in seconds],
        "rps": [float(requests[t]) for t in seconds],
        "fails": [float(failures[t]) for t in seconds],
    }


def client_history(history_csv: Path) -> dict[str, list[float]]:
    """Locust's per-second history of all requests: time, users, p50 and p95 (ms, recent window)."""
    series: dict[str, list[float]] = {k: [] for k in ("t", "users", "p50_ms", "p95_ms")}
    if not history_csv.is_file():
        return series
    with history_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] != "Aggregated":
                continue
            for key, text in zip(
                series, (row["Timestamp"], row["User Count"], row["50%"], row["95%"]), strict=True
            ):
                value = _num(text)
                no_answers_yet = key.endswith("_ms") and value == 0  # Locust writes 0 before any answer
                series[key].append(math.nan if value is None or no_answers_yet else value)
    return series


def counters(prom: PromClient, at: float) -> dict[str, float]:
    """Raw counter values at one moment: the base of the exact server-side counts."""
    per_endpoint = {
        f"requests:{name}": prom.value(f'sum({REQUESTS}{{endpoint=~"/?{name}"}})', at) or 0.0
        for name in ENDPOINTS
    }
    return {
        **per_endpoint,
        "requests": prom.value(f"sum({REQUESTS}{{{SELECTOR}}})", at) or 0.0,
        "failures": prom.value(f'sum({REQUESTS}{{{SELECTOR},status!~"2.."}})', at) or 0.0,
        "errors_5xx": prom.value(f'sum({REQUESTS}{{{SELECTOR},status=~"5.."}})', at) or 0.0,
        "batch_sum": prom.value(f"sum({BATCH_SIZE}_sum)", at) or 0.0,
        "batch_count": prom.value(f"sum({BATCH_SIZE}_count)", at) or 0.0,
        "queue_sum": prom.value(f"sum({QUEUE_WAIT}_sum)", at) or 0.0,
        "queue_count": prom.value(f"sum({QUEUE_WAIT}_count)", at) or 0.0,
        "compute_sum": prom.value(f"sum({COMPUTE}_sum)", at) or 0.0,
        "compute_count": prom.value(f"sum({COMPUTE}_count)", at) or 0.0,
    }


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isnan(seconds) else seconds * 1000.0


def quantiles_ms(prom: PromClient, metric: str, selector: str, window: Window) -> dict[str, float | None]:
    """p50/p95/p99 (ms) of a histogram over the window, by `histogram_quantile`."""
    rate = f"sum by (le) (increase({metric}_bucket{{{selector}}}[{window.range_ms}]))"
    return {
        f"p{round(q * 100)}_ms": _ms(prom.value(f"histogram_quantile({q}, {rate})", window.after, None))
        for q in QUANTILES
    }


def server_figures(prom: PromClient, before: dict[str, float], window: Window) -> dict[str, Any]:
    """What the service saw during the window, from Prometheus."""
    after = counters(prom, window.after)
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    figures: dict[str, Any] = {
        "requests": delta["requests"],
        "failures": delta["failures"],
        "errors_5xx": delta["errors_5xx"],
        "error_rate": _ratio(delta["failures"], delta["requests"]) or 0.0,
        "rps": delta["requests"] / window.seconds,
        **quantiles_ms(prom, LATENCY, SELECTOR, window),
        "mean_batch_size": _ratio(delta["batch_sum"], delta["batch_count"]),
        "batches": delta["batch_count"],
        "queue_wait_mean_ms": _ms(_ratio(delta["queue_sum"], delta["queue_count"])),
        "compute_mean_ms": _ms(_ratio(delta["compute_sum"], delta["compute_count"])),
        "queue_wait_p95_ms": quantiles_ms(prom, QUEUE_WAIT, "", window)["p95_ms"],
        "compute_p95_ms": quantiles_ms(prom, COMPUTE, "", window)["p95_ms"],
    }
    figures["counters"] = {
        "before": before,
        "after": after,
        "before_at": window.before,
        "after_at": window.after,
    }
    figures["by_endpoint"] = {
        name: {
            "requests": delta[f"requests:{name}"],
            **quantiles_ms(prom, LATENCY, f'endpoint=~"/?{name}"', window),
        }
        for name in ENDPOINTS
    }
    return figures


def server_series(prom: PromClient, window: Window, rate_window_s: float) -> dict[str, RangeSeries]:
    """Time series over the run for the plots: throughput, latency quantiles, batching, queue, compute."""
    w = f"{math.ceil(rate_window_s * 1000)}ms"
    exprs = {
        "rps": f"sum(rate({REQUESTS}{{{SELECTOR}}}[{w}]))",
        "errors_per_s": f'sum(rate({REQUESTS}{{{SELECTOR},status!~"2.."}}[{w}])) or vector(0)',
        "mean_batch_size": f"sum(rate({BATCH_SIZE}_sum[{w}])) / sum(rate({BATCH_SIZE}_count[{w}]))",
        "queue_wait_ms": f"1000 * sum(rate({QUEUE_WAIT}_sum[{w}])) / sum(rate({QUEUE_WAIT}_count[{w}]))",
        "compute_ms": f"1000 * sum(rate({COMPUTE}_sum[{w}])) / sum(rate({COMPUTE}_count[{w}]))",
        "in_flight": f"sum({IN_FLIGHT})",
    }
    for q in QUANTILES:
        exprs[f"p{round(q * 100)}_ms"] = (
            f"1000 * histogram_quantile({q}, sum by (le) (rate({LATENCY}_bucket{{{SELECTOR}}}[{w}])))"
        )
    start, end = window.start - 2.0, window.after + 1.0
    return {name: prom.query_range(expr, start, end, 1.0) for name, expr in exprs.items()}
