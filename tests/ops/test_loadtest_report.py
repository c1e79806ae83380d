"""The load test's figures and report writer, on made-up Locust stats and Prometheus series."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from PIL import Image

from loadtest import figures, report
from loadtest.mix import generate_body
from loadtest.prom import RangeSeries
from tests.builders.tools import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def entry(name: str, times: dict[str, int], failures: int = 0) -> dict[str, object]:
    count = sum(times.values())
    total_ms = sum(float(k) * v for k, v in times.items())
    return {
        "name": name,
        "num_requests": count,
        "num_failures": failures,
        "start_time": 100.0,
        "last_request_timestamp": 110.0,
        "total_response_time": total_ms,
        "max_response_time": max(float(k) for k in times),
        "response_times": times,
        "num_reqs_per_sec": {"100": count // 2, "101": count - count // 2},
        "num_fail_per_sec": {},
    }


def test_percentiles_follow_locust() -> None:
    # Locust's rule: the smallest time with at most int(n * q) answers above it (1..100 ms once each).
    times = {str(ms): 1 for ms in range(1, 101)}
    assert figures.percentile_ms(times, 0.5) == 51
    assert figures.percentile_ms(times, 0.95) == 96
    assert figures.percentile_ms(times, 0.99) == 100
    assert figures.percentile_ms({"7": 3}, 0.99) == 7
    assert figures.percentile_ms({}, 0.5) is None


def test_client_figures_add_up_the_endpoints() -> None:
    entries = [
        entry("/generate", {"5": 70}),
        entry("/encode", {"10": 15}, failures=1),
        entry("/reconstruct", {"20": 15}),
    ]
    client = figures.client_figures(entries, seconds=10.0)
    assert client["requests"] == 100 and client["failures"] == 1 and client["rps"] == 10.0
    assert client["p50_ms"] == 5 and client["p99_ms"] == 20
    assert set(client["by_endpoint"]) == {"generate", "encode", "reconstruct"}
    rate = figures.client_rate(entries)
    assert rate["t"] == [100.0, 101.0] and sum(rate["rps"]) == 100


def test_traffic_mix_is_valid_for_the_api() -> None:
    import random

    rng = random.Random(0)
    for _ in range(500):
        body = generate_body(rng)
        text = str(body["text"])
        assert 1 <= len(text) <= 32 and set(text) <= set("0123456789 ") and any(c.isdigit() for c in text)
        assert 1 <= int(body["samples"]) <= 16  # type: ignore[call-overload]


def fake_record() -> dict[str, object]:
    client = {
        "requests": 100.0,
        "failures": 0.0,
        "rps": 10.0,
        "p50_ms": 5.0,
        "p95_ms": 9.0,
        "p99_ms": 12.0,
        "by_endpoint": {"generate": {"requests": 70.0, "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": 11.0}},
    }
    server = {
        "requests": 101.0,
        "failures": 0.0,
        "errors_5xx": 0.0,
        "error_rate": 0.0,
        "rps": 10.1,
        "p50_ms": 4.0,
        "p95_ms": math.inf,
        "p99_ms": math.nan,
        "mean_batch_size": 1.5,
        "batches": 67.0,
        "by_endpoint": {"generate": {"requests": 71.0, "p50_ms": 4.0, "p95_ms": 8.0, "p99_ms": 10.0}},
    }
    run = {
        "started_at": "2026-01-01T00:00:00+00:00",
        "duration_s": 10,
        "users": 4,
        "spawn_rate": 4,
        "target": "http://127.0.0.1:1",
        "model_version": "v0001",
        "workers": 1,
    }
    return report.summary(run, client, server)


def test_summary_agreement_and_non_finite_values() -> None:
    record = fake_record()
    assert record["agreement"] == {
        "request_count_diff_pct": 1.0,
        "tolerance_pct": 3.0,
        "within_tolerance": True,
    }
    assert record["server"]["p95_ms"] is None and record["server"]["p99_ms"] is None  # type: ignore[index]
    assert record["mean_batch_size"] == 1.5


def test_report_files(tmp_path: Path) -> None:
    history = {
        "t": [100.0, 101.0],
        "users": [4.0, 4.0],
        "p50_ms": [5.0, 5.0],
        "p95_ms": [9.0, math.nan],
        "rate_t": [100.0, 101.0],
        "rate_rps": [50.0, 50.0],
        "rate_fails": [0.0, 0.0],
    }
    line: RangeSeries = [({}, [(100.0, 1.0), (101.0, 2.0)])]
    series = {
        k: line
        for k in (
            "rps",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "mean_batch_size",
            "in_flight",
            "queue_wait_ms",
            "compute_ms",
        )
    }
    series["p99_ms"] = []  # an empty series must not break the plot
    report.write(tmp_path, fake_record(), history, series, t0=100.0)
    assert json.loads((tmp_path / "summary.json").read_text())["client"]["requests"] == 100
    markdown = (tmp_path / "summary.md").read_text()
    assert "| requests | 100 | 101 |" in markdown and "mean batch size" in markdown
    for name in ("throughput.png", "latency.png", "batching.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(tmp_path / name) as image:
            image.verify()


def test_locust_loads_the_locustfile_from_outside_the_repository(tmp_path: Path) -> None:
    """`locust -f loadtest/locustfile.py --list` (in a subprocess: Locust monkey-patches its process)."""
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"), "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "DigitsUser" in result.stdout
