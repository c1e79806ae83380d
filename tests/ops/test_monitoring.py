"""Prometheus configs (checked by promtool) and the Grafana dashboard, against app/metrics.py's names."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram

from app import metrics
from loadtest import figures
from loadtest.prom import scrape_config
from tests.builders.tools import REPO, system_tool

PROMETHEUS_DIR = REPO / "ops" / "prometheus"
DASHBOARD = REPO / "ops" / "grafana" / "dashboards" / "cvae-service.json"
DATASOURCE = REPO / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


def exposed_names() -> set[str]:
    """Every series name the service exposes, with the suffixes Prometheus adds."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Histogram):
            names.update(f"{value._name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def referenced_names(expr: str) -> set[str]:
    return set(re.findall(r"\bcvae_[a-z_]+", expr))


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([system_tool("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_compose_config() -> None:
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_load_test_config(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape_config("127.0.0.1:8000", interval_s=1.0))
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_really_checks(tmp_path: Path) -> None:
    """Control: an invalid config is refused."""
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 5s\n")
    assert promtool("check", "config", str(config)).returncode != 0


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query, written as a recording rule."""
    rules: dict[str, Any] = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m")}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "rules.json"  # JSON is YAML
    path.write_text(json.dumps(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", ["dashboard", "alerts", "loadtest"])
def test_queries_use_the_service_metric_names(source: str) -> None:
    if source == "dashboard":
        text = " ".join(dashboard_exprs())
    elif source == "alerts":
        text = (PROMETHEUS_DIR / "alerts.yml").read_text()
    else:
        text = " ".join(str(v) for k, v in vars(figures).items() if k.isupper())
    used = referenced_names(text)
    assert used, f"no cvae_ metric in the {source} queries"
    unknown = {
        n
        for n in used
        if n not in exposed_names()
        and f"{n}_total" not in exposed_names()
        and f"{n}_bucket" not in exposed_names()
    }
    assert not unknown, f"{source} names metrics app/metrics.py does not define: {sorted(unknown)}"


def test_dashboard_covers_what_operators_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "request rate by endpoint and status",
        "p50 / p95 / p99",
        "queue wait vs compute",
        "batch size",
        "in flight",
        "errors",
        "by replica",
        "served version",
    ):
        assert topic in titles, topic
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {"prometheus"}
    assert "uid: prometheus" in DATASOURCE.read_text()
    assert "url: http://prometheus:9090" in DATASOURCE.read_text()
