"""Servers in special states: an empty registry, a tiny queue, two workers, and SIGTERM under load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from loadtest.server import start_server
from model.registry import Registry
from tests.builders.http import generate_concurrently
from tests.builders.metrics import scrape, value

pytestmark = pytest.mark.timeout(180)


def test_an_empty_registry_serves_503_until_a_version_is_promoted(
    tmp_path: Path, trained_registry: Path
) -> None:
    root = tmp_path / "registry"
    with start_server(root, ready=False, registry_poll_s=0.2) as server:
        url = server.base_url
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
        assert "no active model version" in ready.json()["detail"]
        generate = httpx.post(url + "/generate", json={"text": "1"})
        assert generate.status_code == 503 and generate.headers["retry-after"] == "5"
        assert httpx.get(url + "/healthz").status_code == 200
        assert httpx.get(url + "/v1/models").json() == {
            "active": None,
            "serving": None,
            "loaded": [],
            "device": "cpu",
            "total": 0,
            "versions": [],
        }
        # no admin token configured: the admin routes do not exist
        assert (
            httpx.post(url + "/admin/models/v0001/promote", headers={"Authorization": "Bearer x"}).status_code
            == 404
        )
        # a version published without being promoted: readiness says so, and how to promote it
        source = Registry(trained_registry)
        version = source.active_version()
        assert version is not None
        shutil.copytree(source.path(version), root / version)
        deadline = time.monotonic() + 10
        while "none is active" not in (detail := httpx.get(url + "/readyz").json()["detail"]):
            assert time.monotonic() < deadline, detail
            time.sleep(0.05)
        assert f"1 version(s), the newest {version}, but none is active" in detail
        assert "python -m model promote VERSION" in detail
        # promoted from the command line, it is picked up without a restart
        promoted = subprocess.run(
            [sys.executable, "-m", "model", "--registry", str(root), "promote", version],
            capture_output=True,
            text=True,
        )
        assert promoted.returncode == 0, promoted.stderr
        assert _ready_within(url, 10.0), "the registry poll did not pick the version up"
        assert httpx.post(url + "/generate", json={"text": "1"}).status_code == 200


def _ready_within(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if httpx.get(url + "/readyz").status_code == 200:
            return True
        time.sleep(0.05)
    return False


def test_overload_gets_fast_503s_and_recovers(serving_registry: Path) -> None:
    # A slow upload stays in flight, so a batch waits its full second to fill: accepted requests stay
    # queued, and only 3 may wait at once.
    with start_server(
        serving_registry, max_batch_wait_ms=1000, max_queue_depth=3, request_timeout_s=5
    ) as server:
        url = server.base_url
        uploader = threading.Thread(target=_slow_upload, args=(url, 1.5))
        uploader.start()
        time.sleep(0.3)
        responses = generate_concurrently(url, [{"text": "1", "seed": i} for i in range(8)])
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 3 + [503] * 5
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1" and "queue is full" in r.json()["detail"]
                assert r.elapsed.total_seconds() < 0.5  # refused at once, not after waiting
            else:
                assert r.elapsed.total_seconds() < 3  # answered when the batch ran
        uploader.join(10)
        assert generate_concurrently(url, [{"text": "2"}])[0].status_code == 200  # recovered at once
        assert value(scrape(url), "cvae_rejected_total", reason="queue_full") == 5


def _slow_upload(url: str, seconds: float) -> None:
    """Keep a request in flight by sending its body slowly (the batcher then waits for it)."""

    def body():  # noqa: ANN202
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n\r\n'
        for _ in range(int(seconds / 0.1)):
            time.sleep(0.1)
            yield b"\0" * 10

    httpx.post(url + "/encode", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})


def test_a_request_past_its_timeout_gets_503(serving_registry: Path) -> None:
    with start_server(serving_registry, max_batch_wait_ms=1000, request_timeout_s=0.3) as server:
        url = server.base_url
        uploader = threading.Thread(target=_slow_upload, args=(url, 1.5))
        uploader.start()
        time.sleep(0.3)  # another request is in flight: a batch waits up to 1 s for it, past the timeout
        started = time.perf_counter()
        response = httpx.post(url + "/generate", json={"text": "1"}, timeout=10)
        assert time.perf_counter() - started < 1.0
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "0.3 s request timeout" in response.json()["detail"]
        uploader.join(10)
        alone = httpx.post(url + "/generate", json={"text": "1"}, timeout=10)
        assert alone.status_code == 200  # alone, a request does not wait for a batch to fill


def test_two_workers_aggregate_their_metrics(serving_registry: Path, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with start_server(serving_registry, workers=2, env=env) as server:
        url = server.base_url
        sent = 0
        for _ in range(20):  # until both workers have served (the kernel picks who accepts)
            responses = generate_concurrently(url, [{"text": "12", "seed": i} for i in range(30)])
            assert {r.status_code for r in responses} == {200}
            sent += len(responses)
            if len(set(metrics_dir.glob("counter_*.db"))) == 2:
                break
        assert len(set(metrics_dir.glob("counter_*.db"))) == 2, "the second worker never served"
        for _ in range(3):  # whichever worker answers the scrape, it reports both
            samples = scrape(url)
            assert value(samples, "cvae_requests_total", endpoint="/generate", status="200") == sent
            assert value(samples, "cvae_digits_generated_total") == 2 * sent


def test_sigterm_drains_in_flight_requests_and_exits_0(serving_registry: Path) -> None:
    # A slow upload keeps a request in flight, so the batch waits its full 800 ms: the six requests
    # are still queued when the signal lands.
    server = start_server(serving_registry, max_batch_wait_ms=800)
    results: list[list[httpx.Response]] = []
    try:
        uploader = threading.Thread(target=_slow_upload, args=(server.base_url, 1.0))
        uploader.start()
        time.sleep(0.2)
        started = time.perf_counter()
        worker = threading.Thread(
            target=lambda: results.append(generate_concurrently(server.base_url, [{"text": "9"}] * 6))
        )
        worker.start()
        time.sleep(0.3)
        server.process.terminate()  # SIGTERM
        worker.join(30)
        elapsed = time.perf_counter() - started
        uploader.join(30)
        code = server.process.wait(30)
    finally:
        server.stop()
    assert [r.status_code for r in results[0]] == [200] * 6
    assert elapsed > 0.5  # they were answered after the signal, not before it
    assert code == 0
    log = server.log()
    assert "inference queue drained" in log and "Traceback" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [e for e in lines if e["logger"] == "app.access" and e.get("endpoint") == "/generate"]
    assert len(access) == 6 and all(len(e["request_id"]) == 32 and e["status"] == 200 for e in access)
    server.log_path.unlink(missing_ok=True)


def test_cuda_asked_for_without_cuda_fails_fast(serving_registry: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with (
        pytest.raises(RuntimeError, match="CUDA is not available") as failure,
        start_server(serving_registry, device="cuda"),
    ):
        pass
    # a clear one-line error and exit code 2, not a traceback
    assert "server exited with 2" in str(failure.value) and "Traceback" not in str(failure.value)
