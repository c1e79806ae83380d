"""A tiny run of the soak benchmark (benchmarks/soak.py), so the command keeps working; the real soak
(100,000 requests) is run by hand and recorded in docs/reliability.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import soak
from tests.builders import figures

pytestmark = pytest.mark.timeout(120)


def test_a_short_soak_serves_every_request_and_reports_throughput_and_memory(
    two_versions: Path, tmp_path: Path
) -> None:
    out = tmp_path / "soak"
    argv = ["--requests", "400", "--connections", "8", "--interval", "0.5", "--registry", str(two_versions)]
    code = soak.main([*argv, "--out", str(out), "--max-growth-mb", "100", "--quiet"])
    assert code == 0
    report = json.loads((out / "soak.json").read_text())
    assert report["requests"] == 400 and report["failures"] == {}
    assert sum(report["by_kind"].values()) == 400 and min(report["by_kind"].values()) > 0
    assert report["samples"] and report["samples"][-1]["done"] == 400
    assert report["rss_start_mb"] > 0 and report["rss_end_mb"] > 0
    assert (out / "soak.png").stat().st_size > 1000 and "| requests done |" in (out / "soak.md").read_text()
    figures.record(
        "tiny soak (400 requests): req/s, RSS start -> end (MB)",
        f"{400 / report['seconds']:.0f}, {report['rss_start_mb']} -> {report['rss_end_mb']}",
    )
