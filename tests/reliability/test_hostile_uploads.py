"""Hostile requests through the real server: every one gets its documented answer quickly, memory stays
bounded, and a slow or oversized body neither hangs its connection nor stalls anyone else.

The corpus (tests/builders/corpus.py) is generated, not downloaded. imaging's own tests cover these files at
the function level; these go through HTTP, the multipart parser, the body limits and the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.server import ServerProcess, start_server
from tests.builders import figures
from tests.builders.checks import (
    assert_clean_error,
    assert_clean_error_body,
    assert_log_has_no_traceback,
    vm_kib,
)
from tests.builders.corpus import Hostile, corpus, digit
from tests.builders.images import encode
from tests.builders.rawhttp import connect, read_response, request_head
from tests.builders.servers import BODY_TIMEOUT_S

pytestmark = pytest.mark.timeout(180)

ANSWER_WITHIN_S = 2.0  # every corpus request, on a shared two-core machine (typically a few ms)
PEAK_GROWTH_LIMIT_MB = 150  # one 10-gigapixel bomb decoded would need 10 GB; the 16 MP one needs ~16 MB
MULTIPART_HEAD = b'--b0und\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n\r\n'


@pytest.fixture(scope="module")
def server(two_versions: Path) -> Iterator[ServerProcess]:
    """A fresh server (so its peak RSS belongs to this module), with a short body timeout."""
    with start_server(two_versions, body_timeout_s=BODY_TIMEOUT_S) as started:
        with httpx.Client(base_url=started.base_url, timeout=30) as client:  # warm every path once
            png = encode(digit(), "PNG")
            assert client.post("/encode", files={"file": ("d.png", png, "image/png")}).status_code == 200
            assert client.post("/reconstruct", files={"file": ("d.png", png, "image/png")}).status_code == 200
            assert client.post("/generate", json={"text": "0123456789", "samples": 4}).status_code == 200
        yield started


def send(client: httpx.Client, item: Hostile) -> httpx.Response:
    return client.request(
        item.method,
        item.path,
        files=item.files or None,
        data=item.data or None,
        content=item.content,
        headers=item.headers,
        params=item.params,
    )


def mismatch(item: Hostile, response: httpx.Response, seconds: float) -> str | None:
    """Why an answer is not the documented one, or None."""
    if response.status_code != item.status:
        return f"{response.status_code} instead of {item.status}: {response.text[:200]}"
    if seconds > ANSWER_WITHIN_S:
        return f"took {seconds:.2f} s"
    if item.status >= 400:
        detail = str(assert_clean_error(response)["detail"]).lower()
        if item.fragment not in detail:
            return f"detail {detail!r} does not mention {item.fragment!r}"
    elif item.path == "/encode":
        body = response.json()
        if len(body["label_probs"]) != 10 or abs(sum(body["label_probs"]) - 1) > 1e-4:
            return f"not a valid encoding: {body}"
    return None


def test_the_corpus_gets_documented_answers_quickly_in_bounded_memory(server: ServerProcess) -> None:
    items = corpus()
    peak_before, rss_before = vm_kib(server.process.pid, "VmHWM"), vm_kib(server.process.pid, "VmRSS")
    problems, slowest = [], 0.0
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for item in items:
            started = time.perf_counter()
            response = send(client, item)
            seconds = time.perf_counter() - started
            slowest = max(slowest, seconds)
            if (why := mismatch(item, response, seconds)) is not None:
                problems.append(f"{item.name}: {why}")
    peak_after, rss_after = vm_kib(server.process.pid, "VmHWM"), vm_kib(server.process.pid, "VmRSS")
    growth_mb = (peak_after - peak_before) / 1024
    figures.record("hostile corpus requests", len(items))
    figures.record("hostile corpus slowest answer (s)", round(slowest, 3))
    figures.record(
        "hostile corpus: server peak RSS before / after (MB)",
        f"{peak_before / 1024:.0f} / {peak_after / 1024:.0f}",
    )
    figures.record(
        "hostile corpus: server RSS before / after (MB)", f"{rss_before / 1024:.0f} / {rss_after / 1024:.0f}"
    )
    assert not problems, "\n".join(problems)
    assert growth_mb < PEAK_GROWTH_LIMIT_MB, f"peak RSS grew by {growth_mb:.0f} MB"
    assert httpx.get(server.base_url + "/readyz").status_code == 200
    assert_log_has_no_traceback(server.log())


def trickle(base_url: str, path: str, content_type: str, first: bytes, outcome: dict) -> None:
    """Declare a 100 KB body, send its start, then one byte every 0.2 s; record the server's answer."""
    sock = connect(base_url)
    started = time.perf_counter()
    try:
        headers = {"Content-Type": content_type, "Content-Length": str(len(first) + 100_000)}
        sock.sendall(request_head("POST", path, headers) + first)
        sock.settimeout(0.2)
        for _ in range(int((BODY_TIMEOUT_S + 10) / 0.2)):
            try:
                sock.sendall(b"1")
                if sock.recv(1, 2):  # MSG_PEEK: the answer has started
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        outcome["response"] = read_response(sock, started)
    finally:
        sock.close()


def stall(base_url: str, outcome: dict) -> None:
    """Declare a 1000-byte JSON body, send 10 bytes of it, then nothing."""
    sock = connect(base_url)
    started = time.perf_counter()
    try:
        headers = {"Content-Type": "application/json", "Content-Length": "1000"}
        sock.sendall(request_head("POST", "/generate", headers) + b'{"text": "')
        outcome["response"] = read_response(sock, started, timeout_s=BODY_TIMEOUT_S + 10)
    finally:
        sock.close()


def test_slow_and_stalled_bodies_get_408_and_stall_nobody_else(server: ServerProcess) -> None:
    outcomes: list[dict] = [{}, {}, {}]
    threads = [
        threading.Thread(
            target=trickle,
            args=(
                server.base_url,
                "/encode",
                "multipart/form-data; boundary=b0und",
                MULTIPART_HEAD,
                outcomes[0],
            ),
        ),
        threading.Thread(
            target=trickle,
            args=(server.base_url, "/generate", "application/json", b'{"text": "', outcomes[1]),
        ),
        threading.Thread(target=stall, args=(server.base_url, outcomes[2])),
    ]
    for thread in threads:
        thread.start()
    latencies = []
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        while any(thread.is_alive() for thread in threads) and len(latencies) < 200:
            started = time.perf_counter()
            assert client.post("/generate", json={"text": "42"}).status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    for outcome in outcomes:
        answer = outcome["response"]
        assert answer.status == 408, answer
        assert BODY_TIMEOUT_S - 0.1 < answer.seconds < BODY_TIMEOUT_S + 2.0
        assert answer.headers["connection"] == "close" and answer.closed
        detail = assert_clean_error_body(answer.status, answer.body, answer.headers["x-request-id"])["detail"]
        assert "did not arrive within" in detail
    assert len(latencies) >= 10 and max(latencies) < 1.0  # the event loop kept serving everyone else
    figures.record("slow bodies: answered 408 after (s)", [round(o["response"].seconds, 2) for o in outcomes])
    figures.record("slowest other request during slow bodies (s)", round(max(latencies), 3))


def test_an_oversized_chunked_body_is_refused_without_reading_it_all(server: ServerProcess) -> None:
    sock = connect(server.base_url)
    started = time.perf_counter()
    sent = 0
    try:
        headers = {"Content-Type": "multipart/form-data; boundary=b0und", "Transfer-Encoding": "chunked"}
        sock.sendall(
            request_head("POST", "/encode", headers) + b"%x\r\n%s\r\n" % (len(MULTIPART_HEAD), MULTIPART_HEAD)
        )
        chunk = b"%x\r\n%s\r\n" % (65536, bytes(65536))
        try:
            while sent < 200_000_000:  # the server cuts us off long before this
                sock.sendall(chunk)
                sent += 65536
        except OSError:  # reset by the server once it has answered and closed
            pass
        answer = read_response(sock, started)
    finally:
        sock.close()
    assert answer.status == 413 and answer.headers["connection"] == "close"
    assert "byte limit" in assert_clean_error_body(answer.status, answer.body)["detail"]
    assert sent < 150_000_000 and answer.seconds < 10  # cut off: the limit, a 64 MB drain, socket buffers
    figures.record("chunked oversized body: bytes sent before the cut-off (MB)", round(sent / 1e6, 1))


def test_extreme_styles_are_refused_or_drawn_never_a_server_error(server: ServerProcess) -> None:
    """Finite JSON numbers can still overflow float32 (1e200) or the network (+-3.4e38): a 422, not a 500.
    (Found by the fuzzer.)"""
    magnitudes = (1e30, 3e38, 3.4e38, 1e200, 1.7e308)
    signs = ((1, 1, 1, 1), (-1, 1, -1, 1), (1, -1, -1, 1), (-1, -1, -1, -1))
    statuses = []
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for magnitude in magnitudes:
            for sign in signs:
                style = [s * magnitude for s in sign]
                response = client.post("/generate", json={"text": "0123456789", "style": style})
                assert response.status_code in (200, 422), (style, response.status_code)
                if response.status_code == 422:
                    assert "style values" in assert_clean_error(response)["detail"]
                if magnitude > 3.5e38:
                    assert response.status_code == 422, style
                statuses.append(response.status_code)
    figures.record("extreme styles: answered 200 / 422", f"{statuses.count(200)} / {statuses.count(422)}")
