"""A real Prometheus server for the load test, and a small client of its HTTP API.

The server is Debian's `prometheus` binary started with a temporary config (one job scraping the service
every second) and a temporary storage directory. The client answers instant and range queries and waits
for a scrape that happened after a given moment, so counters read at the end include every request sent.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

JOB = "cvae-api"


class PromError(RuntimeError):
    """Prometheus answered with an error, or did not answer in time."""


def find_prometheus() -> str:
    """The prometheus binary: $PROMETHEUS_BIN, else the one on PATH (Debian: /usr/bin/prometheus)."""
    binary = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not binary:
        raise PromError("prometheus is not installed: `make deps-prometheus` (Debian package prometheus)")
    return binary


def scrape_config(target: str, interval_s: float = 1.0, metrics_path: str = "/metrics") -> str:
    """A Prometheus config scraping `target` (host:port) every `interval_s` seconds."""
    interval = f"{int(interval_s * 1000)}ms"
    return (
        "# Written by loadtest/prom.py for one load-test run.\n"
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  scrape_timeout: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        f"    metrics_path: {metrics_path}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )


def server_command(config: Path, storage: Path, port: int) -> list[str]:
    """The command line of a throwaway Prometheus server on 127.0.0.1:`port`."""
    return [
        find_prometheus(),
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]


Series = list[tuple[dict[str, str], float]]
RangeSeries = list[tuple[dict[str, str], list[tuple[float, float]]]]


class PromClient:
    """Queries over Prometheus's HTTP API (`/api/v1/...`)."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str]) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=self.timeout_s) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, OSError) as exc:
            raise PromError(f"{self.url}{path}: {exc}") from exc
        if body.get("status") != "success":
            raise PromError(f"{params.get('query', path)}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> Series:
        """An instant vector: (labels, value) per series; NaN values are kept."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def value(self, expr: str, at: float | None = None, default: float | None = 0.0) -> float | None:
        """The single value of `expr` (summed when several series); `default` when there is none."""
        values = [v for _, v in self.query(expr, at) if not math.isnan(v)]
        return sum(values) if values else default

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> RangeSeries:
        """A range query: (labels, [(t, value), ...]) per series."""
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"},
        )
        return [
            (item["metric"], [(float(t), float(v)) for t, v in item["values"]]) for item in data["result"]
        ]

    def wait_scrape_after(self, moment: float, job: str = JOB, timeout_s: float = 60.0) -> float:
        """Wait for a successful scrape of `job` that started after `moment`; returns its time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # timestamp() of a plain selector is the scrape's time (after `== 1` it would be "now").
            stamps = [v for _, v in self.query(f'timestamp(up{{job="{job}"}})')]
            if stamps and min(stamps) > moment:
                at = max(stamps)
                if all(v == 1 for _, v in self.query(f'up{{job="{job}"}}', at)):
                    return at
            time.sleep(0.2)
        raise PromError(f"no successful scrape of job {job!r} after {moment:.1f} within {timeout_s:.0f} s")
