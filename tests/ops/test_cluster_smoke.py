"""The fleet on loopback: deploy/haproxy/haproxy.cfg checked by HAProxy itself, and a short run of the
cluster smoke test (`make cluster-smoke` runs the long one): 3 real replicas behind a real HAProxy under
load, a version trained and promoted, a rolling restart of one replica, one replica killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.fleet import HAPROXY_CONFIG
from tests.builders.tools import REPO, system_tool

SHORT_RUN = [
    "--phase-s",
    "3",
    "--restart",
    "1",
    "--clients",
    "4",
    "--train-args",
    "--preset tiny --epochs 1 --max-examples 600 --no-eval --no-progress",
]


def haproxy() -> str:
    """The Debian haproxy binary (`make deps-haproxy`); /usr/sbin is not on every user's PATH."""
    return "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else system_tool("haproxy")


@pytest.mark.parametrize(
    "env",
    [
        {"CVAE_LB_API_1": "127.0.0.1:1", "CVAE_LB_API_2": "127.0.0.1:2", "CVAE_LB_API_3": "127.0.0.1:3"},
        {},  # compose: the replicas come from Docker's DNS
    ],
    ids=["loopback", "compose"],
)
def test_haproxy_accepts_the_configuration(env: dict[str, str]) -> None:
    full = {**os.environ, "CVAE_LB_BIND": "127.0.0.1:8000", "CVAE_LB_STATS_BIND": "127.0.0.1:8404", **env}
    result = subprocess.run(
        [haproxy(), "-c", "-f", str(HAPROXY_CONFIG)], env=full, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_haproxy_really_checks(tmp_path: Path) -> None:
    """Control: a broken file is refused."""
    bad = tmp_path / "haproxy.cfg"
    bad.write_text("defaults\n    mode http\n    retry-on no-such-event\n")
    result = subprocess.run([haproxy(), "-c", "-f", str(bad)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


@pytest.mark.timeout(300)
def test_short_cluster_smoke(trained_registry: Path, tmp_path: Path) -> None:
    haproxy()
    out = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.cluster_smoke",
            "--registry",
            str(trained_registry),
            "--out",
            str(out),
            *SHORT_RUN,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        stdin=subprocess.DEVNULL,
    )
    assert result.stdout.strip().splitlines()[-1] == str(out), result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    phases = report["phases"]
    assert result.returncode == 0 and report["passed"], (report.get("checks"), result.stderr[-3000:])
    assert set(phases) == {"spread", "promote", "rolling", "sigkill"}
    assert min(phases["spread"]["shares"].values()) >= 0.2 and len(phases["spread"]["shares"]) == 3
    assert phases["promote"]["failed"] == 0 and phases["rolling"]["failed"] == 0
    assert phases["promote"]["requests"] > 0 and phases["rolling"]["requests"] > 0
    assert phases["promote"]["new_version"] != phases["promote"]["old_version"]
    assert len(phases["promote"]["convergence_s"]) == 3
    assert phases["rolling"]["restarts"][0]["exit_code"] == 0
    assert phases["sigkill"]["detected_down_s"] <= phases["sigkill"]["haproxy_check_interval_s"] + 0.5
    assert (out / "report.md").is_file() and (out / "haproxy.log").stat().st_size > 0
