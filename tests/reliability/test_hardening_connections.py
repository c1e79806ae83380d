"""Issue 14, connection level, through the real server: oversized request heads, idle and slow
connections, a cap on open connections, and clients that pipeline requests and never read the answers.

Each test is one row of the issue's attack table; the figures they measure are printed at the end of
the run (tests/reliability/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.server import ServerProcess, start_server
from tests.builders import figures
from tests.builders.checks import assert_log_has_no_traceback, vm_kib
from tests.builders.metrics import scrape, value
from tests.builders.rawhttp import connect, read_response

pytestmark = pytest.mark.timeout(180)

HEADER_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(two_versions: Path) -> Iterator[ServerProcess]:
    """Default limits, except a short header timeout (the default 10 s would make the tests slow)."""
    with start_server(two_versions, header_timeout_s=HEADER_TIMEOUT_S) as started:
        yield started


class Prober:
    """GET /healthz every 0.2 s on fresh connections from a thread; records each answer's time."""

    def __init__(self, base_url: str, timeout_s: float = 15.0):
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.seconds: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                ok = httpx.get(self.base_url + "/healthz", timeout=self.timeout_s).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.seconds.append(time.perf_counter() - started)
            self.failures += not ok
            self._stop.wait(0.2)


def send_head(base_url: str, head: bytes) -> tuple[int | None, float]:
    """Send a request head in 64 KB pieces (stopping when the server closes); its status, or None."""
    started = time.perf_counter()
    sock = connect(base_url)
    try:
        try:
            for start in range(0, len(head), 65536):
                sock.sendall(head[start : start + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return read_response(sock, started, timeout_s=30).status, time.perf_counter() - started
        except (ConnectionError, TimeoutError):
            return None, time.perf_counter() - started
    finally:
        sock.close()


# -- row 1: huge request heads ----------------------------------------------------------------------
def test_oversized_heads_get_431_fast_in_bounded_memory(server: ServerProcess) -> None:
    base = b"GET /healthz HTTP/1.1\r\nHost: hardening\r\n"
    heads = {
        "one 64 KB header": base + b"X-Big: " + b"a" * 65536 + b"\r\n\r\n",
        "one 1 MB header": base + b"X-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
        "101 headers": base + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n",
        "100k headers": base + b"".join(b"X-%d: 1\r\n" % i for i in range(100_000)) + b"\r\n",
        "2 million headers (38 MB)": base + b"X-H: 1234567890123456789012345678\r\n" * 2_000_000 + b"\r\n",
        "a 1 MB URL": b"GET /healthz?" + b"q" * 1_000_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    }
    pid = server.process.pid
    rss_before = vm_kib(pid, "VmRSS")
    with Prober(server.base_url) as prober:
        for name, head in heads.items():
            for _ in range(2 if "2 million" in name else 1):
                status, seconds = send_head(server.base_url, head)
                figures.record(f"head {name}: status, seconds", (status, round(seconds, 3)))
                assert status == 431, name
                assert seconds < 3.0, name
    rss_after = vm_kib(pid, "VmRSS")
    figures.record("oversized heads: server RSS MB before, after", (rss_before // 1024, rss_after // 1024))
    figures.record("oversized heads: slowest health probe meanwhile, s", round(max(prober.seconds), 3))
    assert rss_after - rss_before < 30 * 1024  # the unprotected server grew by GBs
    assert prober.failures == 0 and max(prober.seconds) < 2.0
    # just under the limits is fine
    ok = base + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(90)) + b"\r\n"
    assert send_head(server.base_url, ok)[0] == 200
    metrics = scrape(server.base_url)
    assert value(metrics, "cvae_connections_refused_total", reason="header_size") >= len(heads) + 1
    assert "connection refused (header_size)" in server.log()
    assert_log_has_no_traceback(server.log())


# -- row 2: idle and slow connections, the connection cap ------------------------------------------
def closing_times(socks: list[socket.socket], started: float, timeout_s: float) -> list[float]:
    """When each socket was closed by the server (seconds after `started`); fails after `timeout_s`."""
    times: list[float] = []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while len(times) < len(socks):
            events = selector.select(timeout=max(0.0, started + timeout_s - time.perf_counter()))
            assert events, f"{len(socks) - len(times)} connections still open after {timeout_s} s"
            for key, _ in events:
                assert key.fileobj.recv(1) == b""  # type: ignore[union-attr]
                selector.unregister(key.fileobj)
                times.append(time.perf_counter() - started)
    return times


def test_idle_and_slow_connections_are_closed_and_the_cap_answers_503(two_versions: Path) -> None:
    cap = 100
    with start_server(two_versions, max_connections=cap, header_timeout_s=HEADER_TIMEOUT_S) as server:
        idle = [connect(server.base_url, timeout_s=10) for _ in range(600)]
        started = time.perf_counter()
        try:
            # a connection over the cap that sends a request gets a 503 at once
            extra = connect(server.base_url)
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
            refused = read_response(extra, time.perf_counter())
            extra.close()
            assert refused.status == 503 and refused.headers["retry-after"] == "1" and refused.closed
            assert json.loads(refused.body)["detail"] == "too many open connections; retry shortly"
            # ... in the error shape of its path (the Open Inference Protocol's under /v2)
            extra = connect(server.base_url)
            extra.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: h\r\n\r\n")
            refused = read_response(extra, time.perf_counter())
            extra.close()
            assert refused.status == 503 and refused.headers["retry-after"] == "1" and refused.closed
            assert json.loads(refused.body) == {"error": "too many open connections; retry shortly"}
            # every idle connection is closed by the server: over the cap within ~1 s, the rest at the
            # header timeout
            closed_at = closing_times(idle, started, HEADER_TIMEOUT_S + 5)
        finally:
            for sock in idle:
                sock.close()
        figures.record(
            "600 idle connections, cap 100: closed by the server after s (median, last)",
            (round(sorted(closed_at)[len(closed_at) // 2], 2), round(max(closed_at), 2)),
        )
        assert sorted(closed_at)[len(closed_at) // 2] < HEADER_TIMEOUT_S  # most were over the cap
        assert max(closed_at) < HEADER_TIMEOUT_S + 2
        # a slow-header client (one header line every 0.3 s) gets a 408 at the header timeout
        slow = connect(server.base_url)
        slow_started = time.perf_counter()
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        try:
            for i in range(40):
                slow.sendall(b"X-Slow-%d: 1\r\n" % i)
                time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_response(slow, slow_started)
        slow.close()
        figures.record("slow headers: status, seconds", (answer.status, round(answer.seconds, 2)))
        assert answer.status == 408 and HEADER_TIMEOUT_S <= answer.seconds < HEADER_TIMEOUT_S + 1.5
        assert httpx.get(server.base_url + "/healthz").status_code == 200  # served again at once
        metrics = scrape(server.base_url)
        for reason in ("connections", "idle", "header_timeout"):
            assert value(metrics, "cvae_connections_refused_total", reason=reason) >= 1, reason
        log = server.log()
        assert "connection refused (idle)" in log and "connection refused (connections)" in log
        assert_log_has_no_traceback(log)


# -- row 3: pipelined requests whose answers are never read ------------------------------------------
async def _pipeline_and_never_read(base_url: str, connections: int, depth: int) -> list[asyncio.StreamWriter]:
    host, port = base_url.removeprefix("http://").split(":")
    request = b"GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\n" * depth
    writers = []
    for _ in range(connections):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.transport.set_write_buffer_limits(high=1 << 20)
        writer.write(request)
        writers.append(writer)
    return writers


def test_pipelined_answers_never_read_do_not_stall_the_service(many_versions: Path) -> None:
    # Timings on the shared 2-core machine move a lot (the server may get a third of a core), so the
    # bounds are the ones that separate a stalled service from a slow one: every probe is answered
    # (the unprotected server left them unanswered after 15 s), the stalled connections are closed by
    # the send timeout, and the service answers normally afterwards.
    connections, depth = 1000, 50
    with start_server(many_versions, send_timeout_s=5.0) as server:
        loop = asyncio.new_event_loop()
        try:
            with Prober(server.base_url, timeout_s=30) as prober:
                writers = loop.run_until_complete(
                    _pipeline_and_never_read(server.base_url, connections, depth)
                )
                loop.run_until_complete(asyncio.sleep(10.0))  # past the send timeout
            figures.record(
                "1,000 connections x 50 pipelined /v1/models never read: health probes answered, "
                "failed, median and slowest s",
                (
                    len(prober.seconds) - prober.failures,
                    prober.failures,
                    round(sorted(prober.seconds)[len(prober.seconds) // 2], 2),
                    round(max(prober.seconds), 2),
                ),
            )
            assert prober.failures == 0 and len(prober.seconds) >= 1
            deadline = time.perf_counter() + 60
            while True:  # every stalled connection is aborted at its send timeout
                metrics = scrape_slowly(server.base_url)
                aborted = value(metrics, "cvae_connections_refused_total", reason="send_timeout")
                if aborted >= 0.95 * connections or time.perf_counter() > deadline:
                    break
                time.sleep(1.0)
            answered = sum(
                v
                for (name, labels), v in metrics.items()
                if name == "cvae_requests_total" and ("endpoint", "/v1/models") in labels
            )
            figures.record(
                "pipelined: connections aborted at the send timeout, answers written", (aborted, answered)
            )
            assert aborted >= 0.95 * connections
            assert answered < 0.2 * connections * depth  # the unread answers stop the work early
            for writer in writers:
                writer.transport.abort()
            started = time.perf_counter()
            listing = httpx.get(server.base_url + "/v1/models", timeout=30)
            figures.record(
                "pipelined: first /v1/models after the attack, s", round(time.perf_counter() - started, 3)
            )
            assert listing.status_code == 200 and listing.json()["total"] == 213
            assert_log_has_no_traceback(server.log())
        finally:
            loop.close()


def scrape_slowly(base_url: str) -> dict:
    """/metrics with a long timeout (the server may still be closing the attack's connections)."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        return scrape(client)


def test_connection_limits_are_refused_when_absurd() -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    for bad in (
        {"max_header_bytes": 10},
        {"max_headers": 0},
        {"max_connections": 0},
        {"header_timeout_s": 0},
    ):
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]
