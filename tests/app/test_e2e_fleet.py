"""A replica in a fleet, through the real server: it follows the registry's active version, pins a
version, survives a broken one, and drains on SIGTERM (/readyz 503 at once, requests finish, exit 0)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.server import start_server
from model.registry import Registry
from tests.builders.metrics import scrape, value
from tests.builders.servers import ADMIN_TOKEN, AUTH

pytestmark = pytest.mark.timeout(300)
POLL_S = 0.2
DRAIN_S = 4.0


@pytest.fixture
def registry(serving_registry: Path, tmp_path: Path) -> Registry:
    """A writable copy of the two-version registry (v0001 active)."""
    return Registry(shutil.copytree(serving_registry, tmp_path / "registry"))


def wait_until(check, seconds: float = 10.0) -> float:  # noqa: ANN001
    """Poll `check()` until true; returns the seconds it took (fails after `seconds`)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"not true within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - started


def serves(url: str, version: str) -> bool:
    answer = httpx.get(url + "/readyz")
    return answer.status_code == 200 and answer.json()["model_version"] == version


def test_a_new_active_version_is_followed_without_a_failed_request(registry: Registry) -> None:
    old, new = registry.version_names()[:2]
    with start_server(registry.root, registry_poll_s=POLL_S) as server:
        url = server.base_url
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    try:
                        answer = client.post("/generate", json={"text": "7", "seed": 1})
                    except httpx.TransportError:
                        statuses.append(-1)  # no answer: a failed request, which the test must see
                        continue
                    statuses.append(answer.status_code)
                    versions.add(answer.headers.get("x-model-version", "?"))

        worker = threading.Thread(target=load)
        worker.start()
        try:
            time.sleep(0.3)
            registry.promote(new)  # e.g. the training job's last step
            took = wait_until(lambda: serves(url, new))
            time.sleep(0.3)
        finally:
            stop.set()
            worker.join(30)
        samples = scrape(url)
    assert took < 5.0
    assert len(statuses) > 10 and set(statuses) == {200}
    assert versions == {old, new}
    assert value(samples, "cvae_model_serving", version=new) == 1
    assert value(samples, "cvae_model_serving", version=old) == 0
    assert value(samples, "cvae_model_loads_total", version=new) == 1


def test_a_broken_new_version_leaves_the_replica_serving_what_it_had(registry: Registry) -> None:
    good, broken = registry.version_names()[:2]
    weights = registry.path(broken) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: the copy was cut off
    with start_server(registry.root, registry_poll_s=POLL_S) as server:
        url = server.base_url
        registry.promote(broken)
        wait_until(lambda: value(scrape(url), "cvae_model_load_failures_total", version=broken) == 1)
        time.sleep(5 * POLL_S)  # more polls: no second attempt, still up and serving the good one
        samples = scrape(url)
        assert value(samples, "cvae_model_load_failures_total", version=broken) == 1
        assert serves(url, good)
        assert httpx.post(url + "/generate", json={"text": "1"}).headers["x-model-version"] == good
        assert httpx.get(url + "/v1/models").json()["active"] == broken


def test_a_pinned_replica_serves_its_version_whatever_is_active(registry: Registry) -> None:
    active, pinned = registry.version_names()[:2]
    with start_server(registry.root, registry_poll_s=POLL_S, model_version=pinned) as server:
        url = server.base_url
        assert serves(url, pinned)
        registry.promote(pinned)
        registry.promote(active)
        time.sleep(3 * POLL_S)
        assert serves(url, pinned)
        answer = httpx.post(url + "/generate", json={"text": "1"})
        assert answer.status_code == 200 and answer.headers["x-model-version"] == pinned


def _trickled_encode(url: str, seconds: float, result: dict[str, object]) -> None:
    """An /encode whose body takes `seconds` to arrive: in flight across the signal (not an image, so
    its answer is a 4xx; what matters is that it gets one)."""

    def body():  # noqa: ANN202
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n\r\n'
        yield head
        for _ in range(int(seconds / 0.1)):
            time.sleep(0.1)
            yield b"\0"
        yield b"\r\n--b--\r\n"

    try:
        answer = httpx.post(
            url + "/encode",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
            timeout=30,
        )
        result["status"] = answer.status_code
    except httpx.TransportError as exc:
        result["status"] = repr(exc)


@pytest.mark.parametrize("workers", [1, 2])  # with 2, uvicorn's supervisor passes SIGTERM to each worker
def test_sigterm_turns_readyz_503_at_once_finishes_requests_and_exits_0(
    registry: Registry, workers: int
) -> None:
    with start_server(registry.root, drain_delay_s=DRAIN_S, workers=workers) as server:
        in_flight: dict[str, object] = {}
        uploader = threading.Thread(target=_trickled_encode, args=(server.base_url, 2.5, in_flight))
        uploader.start()
        time.sleep(0.5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        def every_worker_unready() -> bool:  # 4 answers in a row, whichever worker gives them
            answers = [httpx.get(server.base_url + "/readyz") for _ in range(4)]
            return all(a.status_code == 503 and "shutting down" in a.json()["detail"] for a in answers)

        # One worker gets the signal at once; with several, uvicorn's supervisor passes it on within its
        # 0.5 s tick (longer on a loaded machine); either way well before the drain delay is over.
        assert wait_until(every_worker_unready, DRAIN_S) < (1.0 if workers == 1 else DRAIN_S - 1.5)
        during = httpx.post(server.base_url + "/generate", json={"text": "5"})
        assert during.status_code == 200  # still answered while a load balancer takes us out
        assert value(scrape(server.base_url), "cvae_draining") == 1
        code = server.process.wait(30)
        uploader.join(30)
        log = server.log()
    assert code == 0
    assert isinstance(in_flight["status"], int), in_flight  # the in-flight request got its answer
    assert time.monotonic() - signalled >= DRAIN_S  # the drain delay was kept
    assert "draining" in log and "inference queue drained" in log


@pytest.fixture
def read_only_view(registry: Registry, tmp_path: Path) -> Iterator[Path]:
    """The registry through a read-only bind mount, as the Kubernetes API pods mount it."""
    view = tmp_path / "read-only"
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(registry.root), str(view)], capture_output=True).returncode:
        pytest.skip("a bind mount needs root (CAP_SYS_ADMIN) on this machine")
    try:
        remounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True)
        if remounted.returncode:
            pytest.skip("a read-only remount is not allowed on this machine")
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_replica_on_a_read_only_registry_refuses_promotions_clearly_and_keeps_serving(
    read_only_view: Path,
) -> None:
    with pytest.raises(OSError):
        (read_only_view / "probe").touch()  # the mount really is read-only
    with start_server(read_only_view, admin_token=ADMIN_TOKEN) as server:
        url = server.base_url
        promoted = httpx.post(url + "/admin/models/v0002/promote", headers=AUTH)
        assert promoted.status_code == 409, promoted.text
        detail = promoted.json()["detail"]
        assert "cannot write the active pointer" in detail and "Read-only file system" in detail
        assert str(read_only_view) not in detail  # paths are redacted
        assert serves(url, "v0001")
        answer = httpx.post(url + "/generate", json={"text": "7"})
        assert answer.status_code == 200 and answer.headers["x-model-version"] == "v0001"
    # the command line says the same, and exits 2
    cli = subprocess.run(
        [sys.executable, "-m", "model", "--registry", str(read_only_view), "promote", "v0002"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and "Read-only file system" in cli.stderr
    assert Registry(read_only_view).active_version() == "v0001"
