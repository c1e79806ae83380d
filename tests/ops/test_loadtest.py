"""The load test end to end: a short run of `python -m loadtest` (service, Prometheus, Locust) and its report.

Also: Ctrl-C in the middle stops everything it started, and the model the runner serves (the shipped one
in an empty registry; a trained one only with --train).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from loadtest import runner
from model.registry import Registry
from model.shipped import PRETRAINED_DIR
from tests.builders.tools import REPO, system_tool


@pytest.fixture
def registry(trained_registry: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "registry"
    shutil.copytree(trained_registry, copy)
    return copy


def loadtest_command(registry: Path, out: Path, duration: int, users: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loadtest",
        "--duration",
        str(duration),
        "--users",
        str(users),
        "--registry",
        str(registry),
        "--out",
        str(out),
    ]


def processes_mentioning(*needles: str) -> list[str]:
    """Command lines of live processes whose command line or environment mention a needle."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
            status = (proc / "status").read_text().splitlines()
            state = next(line for line in status if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if "zombie" not in state and any(n in cmdline or n in environ for n in needles):
            found.append(cmdline)
    return found


@pytest.mark.slow
def test_short_load_test_report_is_consistent(registry: Path, tmp_path: Path) -> None:
    system_tool("prometheus")
    result = subprocess.run(
        loadtest_command(registry, tmp_path / "reports", duration=15, users=4),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "reports" and run_dir.name.startswith("loadtest-")

    record = json.loads((run_dir / "summary.json").read_text())
    client, server = record["client"], record["server"]
    assert client["requests"] > 50, "a 15 s run with 4 users sends far more than 50 requests"
    assert client["failures"] == 0 and server["failures"] == 0 and server["errors_5xx"] == 0
    assert abs(client["requests"] - server["requests"]) <= 0.03 * client["requests"]
    assert record["agreement"]["within_tolerance"]
    for side in (client, server):
        assert side["rps"] > 0
        assert 0 < side["p50_ms"] <= side["p95_ms"] <= side["p99_ms"]
    assert record["mean_batch_size"] >= 1
    assert server["queue_wait_mean_ms"] is not None and server["compute_mean_ms"] > 0
    for name in ("generate", "encode", "reconstruct"):
        seen = client["by_endpoint"][name]["requests"]
        assert seen > 0
        assert seen == pytest.approx(server["by_endpoint"][name]["requests"], rel=0.03, abs=2)
    generate_share = client["by_endpoint"]["generate"]["requests"] / client["requests"]
    assert 0.55 < generate_share < 0.85, "about 70% of the traffic is /generate"

    markdown = (run_dir / "summary.md").read_text()
    assert f"| requests | {client['requests']:.0f} | {server['requests']:.0f} |" in markdown
    for name in ("throughput.png", "latency.png", "batching.png"):
        with Image.open(run_dir / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
            image.verify()
    assert processes_mentioning(str(run_dir), str(registry)) == [], "the load test left processes behind"


@pytest.mark.slow
def test_interrupt_stops_everything(registry: Path, tmp_path: Path) -> None:
    system_tool("prometheus")
    out = tmp_path / "reports"
    # A suite started as a background job inherits SIGINT ignored, and so would the runner: give it the
    # default disposition (a handler is reset to it across exec) so that it is interrupted as at a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        runner = subprocess.Popen(
            loadtest_command(registry, out, duration=120, users=2),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("loadtest-*/locust.log")) and time.monotonic() < deadline:
            assert runner.poll() is None, runner.communicate()[1].decode()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # Locust is generating load now
        runner.send_signal(signal.SIGINT)
        # Locust, Prometheus and the service are each given up to 20 s to stop before they are killed
        # (loadtest/processes.stop): allow for all three.
        _, stderr = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, stderr.decode()[-3000:]
    run_dir = next(out.glob("loadtest-*"))
    time.sleep(0.5)
    assert processes_mentioning(str(run_dir), str(registry)) == []


# -- the model it serves ------------------------------------------------------------------------------
@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The commands the runner would run in the foreground (training), recorded instead of run."""
    recorded: list[list[str]] = []
    monkeypatch.setattr(runner, "run_foreground", lambda cmd, env=None: recorded.append(list(cmd)))
    return recorded


def test_an_empty_registry_gets_the_shipped_model_without_training(
    tmp_path: Path, jobs: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    runner.prepare_model(runner.build_parser().parse_args(["--registry", str(registry)]))
    assert jobs == []
    assert Registry(registry).version_names() == ["v0001"] and Registry(registry).active_version() == "v0001"
    shipped = (PRETRAINED_DIR / "model.safetensors").read_bytes()
    assert (registry / "v0001" / "model.safetensors").read_bytes() == shipped
    assert "the shipped pretrained model is v0001, active" in capsys.readouterr().err


def test_a_registry_with_versions_is_served_as_it_is(registry: Path, jobs: list[list[str]]) -> None:
    before = Registry(registry).version_names(), Registry(registry).active_version()
    runner.prepare_model(runner.build_parser().parse_args(["--registry", str(registry)]))
    assert jobs == []
    assert (Registry(registry).version_names(), Registry(registry).active_version()) == before


def test_train_trains_with_the_training_job_instead(tmp_path: Path, jobs: list[list[str]]) -> None:
    registry = tmp_path / "registry"
    argv = ["--registry", str(registry), "--train", "--train-args", "--preset tiny --epochs 2"]
    runner.prepare_model(runner.build_parser().parse_args(argv))
    training = [sys.executable, "-m", "training", "--registry", str(registry), "--if-empty"]
    assert jobs == [[*training, "--preset", "tiny", "--epochs", "2"]]
    assert not registry.exists(), "nothing seeded"


def test_train_args_without_train_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        runner.main(["--train-args", "--preset tiny"])
    assert exit_.value.code == 2
    assert "--train-args needs --train" in capsys.readouterr().err
