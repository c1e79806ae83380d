"""Overload: a burst far above capacity on a server with a tiny queue.

All requests leave at the same instant, each on its own connection. The excess is refused at once (503 +
Retry-After), everything accepted is answered correctly (the very PNG a lone request with the same seed
gets), nobody waits past the request timeout, the refusals are counted in /metrics, and the first request
after the burst is served at once.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from benchmarks.raw_client import post_request
from loadtest.server import start_server
from tests.builders import figures
from tests.builders.checks import assert_clean_error_body, assert_log_has_no_traceback
from tests.builders.metrics import scrape, value
from tests.builders.rawhttp import RawResponse, burst

pytestmark = pytest.mark.timeout(180)

BURST = 200
QUEUE = 2
TIMEOUT_S = 5.0
BODY = {"text": "2026", "samples": 4}  # 16 network rows a request: a real forward pass


def generate(client: httpx.Client, seed: int) -> httpx.Response:
    return client.post("/generate", json={**BODY, "seed": seed})


def test_a_burst_far_above_capacity_sheds_fast_and_recovers(two_versions: Path) -> None:
    settings = dict(max_queue_depth=QUEUE, max_batch_size=2, max_batch_wait_ms=5, request_timeout_s=TIMEOUT_S)
    with (
        start_server(two_versions, **settings) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        started = time.perf_counter()
        results = burst(
            server.base_url, [post_request("/generate", {**BODY, "seed": i}) for i in range(BURST)]
        )
        burst_s = time.perf_counter() - started
        recovery = generate(client, 0)
        recovery_s = time.perf_counter() - started - burst_s
        served = {i: answer for i, (answer, _) in enumerate(results) if answer and answer.status == 200}
        alone = {i: generate(client, i).content for i in [0, *list(served)[:20]]}  # one at a time
        rejected_metric = value(scrape(client), "cvae_rejected_total", reason="queue_full")
        log = server.log()

    assert all(answer is not None for answer, _ in results), "a connection was dropped without an answer"
    shed: list[RawResponse] = [answer for answer, _ in results if answer and answer.status == 503]
    assert len(served) + len(shed) == BURST, sorted({answer.status for answer, _ in results if answer})
    assert len(served) >= QUEUE and len(shed) >= BURST // 2, (len(served), len(shed))
    for answer in shed:
        assert answer.headers["retry-after"] == "1"
        detail = assert_clean_error_body(503, answer.body, answer.headers["x-request-id"])["detail"]
        assert "queue is full" in detail
    for i, answer in served.items():
        image = Image.open(io.BytesIO(answer.body))
        assert (image.size, image.mode) == ((28 * len(BODY["text"]), 28 * BODY["samples"]), "L")
        assert alone.get(i, answer.body) == answer.body, f"seed {i} was answered differently under load"
    waits = sorted(seconds for _, seconds in results)
    shed_waits = sorted(answer.seconds for answer in shed)
    p95_shed = shed_waits[len(shed_waits) * 95 // 100]
    assert waits[-1] < TIMEOUT_S  # nobody waited past the request timeout
    assert p95_shed < 1.0  # refusals are fast
    assert recovery.status_code == 200 and recovery_s < 0.5 and recovery.content == alone[0]  # recovered
    assert rejected_metric == len(shed)
    assert_log_has_no_traceback(log)
    figures.record("burst: concurrent requests / queue depth", f"{BURST} / {QUEUE}")
    figures.record("burst: answered 200 / 503", f"{len(served)} / {len(shed)}")
    figures.record("burst: slowest answer / p95 of the 503s (s)", f"{waits[-1]:.3f} / {p95_shed:.3f}")
    figures.record("burst: whole burst / first request after it (s)", f"{burst_s:.2f} / {recovery_s:.3f}")
