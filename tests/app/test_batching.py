"""The dynamic batcher: shared forward passes, grouping, bounded queue, timeouts, draining."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from app.batching import Batcher
from app.exceptions import InferenceTimeout, NotReady, Overloaded


class Doubler:
    """A runner computing 2x per row, recording the shape of every pass (thread-safe)."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.passes: list[tuple[str, int]] = []
        self.delay_s = delay_s
        self.fail = fail
        self.threads: set[str] = set()

    def run(self, kind: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.threads.add(threading.current_thread().name)
        self.passes.append((kind, int(inputs[0].shape[0])))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("boom")
        return tuple(t * 2 for t in inputs)


def rows(*values: float) -> tuple[torch.Tensor]:
    return (torch.tensor(values).reshape(-1, 1),)


def run(coro):  # noqa: ANN001, ANN201 - tiny helper for async bodies
    return asyncio.run(coro)


async def _started(**kwargs: float) -> Batcher:
    params = {"max_batch_size": 64, "max_wait_ms": 20, "max_queue_depth": 100} | kwargs
    batcher = Batcher(**params)  # type: ignore[arg-type]
    batcher.start()
    return batcher


def _counting(in_flight: int) -> tuple[Batcher, list[int]]:
    """A started batcher (500 ms wait) that reads the process's in-flight count from the list it returns."""
    count = [in_flight]
    batcher = Batcher(64, 500, 100, requests_in_flight=lambda: count[0])
    batcher.start()
    return batcher, count


def test_concurrent_requests_share_one_forward_pass_and_get_their_own_rows() -> None:
    async def body() -> None:
        batcher, runner = await _started(), Doubler()
        results = await asyncio.gather(
            *(batcher.submit(runner, "decode", rows(i, i + 0.5), 5) for i in range(10))
        )
        for i, (outputs, stats) in enumerate(results):
            assert outputs[0].flatten().tolist() == [2 * i, 2 * i + 1]
            assert stats.batch_size == 10 and stats.batch_rows == 20 and stats.queue_ms >= 0
        assert runner.passes == [("decode", 20)]
        assert runner.threads == {"cvae-inference_0"}  # off the event loop, one thread
        await batcher.stop()

    run(body())


def test_max_batch_size_caps_a_pass() -> None:
    async def body() -> None:
        batcher, runner = await _started(max_batch_size=4), Doubler()
        await asyncio.gather(*(batcher.submit(runner, "decode", rows(i), 5) for i in range(10)))
        assert [n for _, n in runner.passes] == [4, 4, 2]
        await batcher.stop()

    run(body())


def test_kinds_and_runners_are_never_mixed_in_a_pass() -> None:
    async def body() -> None:
        batcher, a, b = await _started(), Doubler(), Doubler()
        jobs = [
            batcher.submit(a, "decode", rows(1), 5),
            batcher.submit(a, "encode", rows(2), 5),
            batcher.submit(b, "decode", rows(3), 5),
            batcher.submit(a, "decode", rows(4), 5),
        ]
        results = await asyncio.gather(*jobs)
        assert [r[0][0].item() for r in results] == [2, 4, 6, 8]
        assert sorted(a.passes) == [("decode", 2), ("encode", 1)] and b.passes == [("decode", 1)]
        await batcher.stop()

    run(body())


def test_a_lone_request_waits_at_most_max_wait() -> None:
    async def body() -> None:
        batcher, runner = await _started(max_wait_ms=30), Doubler()
        started = time.perf_counter()
        _, stats = await batcher.submit(runner, "decode", rows(1), 5)
        elapsed = time.perf_counter() - started
        assert 0.025 <= elapsed < 0.5 and stats.batch_size == 1
        await batcher.stop()

    run(body())


def test_a_lone_request_skips_the_wait_when_nobody_else_is_being_served() -> None:
    async def body() -> None:
        batcher, in_flight = _counting(1)
        runner = Doubler()
        started = time.perf_counter()
        await batcher.submit(runner, "decode", rows(*range(17)), 5)  # too big to be computed on the loop
        assert time.perf_counter() - started < 0.25  # not the 500 ms wait
        assert runner.threads == {"cvae-inference_0"}
        in_flight[0] = 3  # two other requests are being served: worth waiting for them
        waited = asyncio.create_task(batcher.submit(runner, "decode", rows(1), 5))
        await asyncio.sleep(0.05)
        later = batcher.submit(runner, "decode", rows(2), 5)
        results = await asyncio.gather(waited, later)
        assert [stats.batch_size for _, stats in results] == [2, 2]
        await batcher.stop()

    run(body())


def test_the_only_request_in_flight_is_computed_on_the_loop_without_a_hand_off() -> None:
    async def body() -> None:
        batcher, in_flight = _counting(1)
        runner = Doubler()
        outputs, stats = await batcher.submit(runner, "decode", rows(1, 2), 5)
        assert outputs[0].flatten().tolist() == [2, 4] and stats.batch_size == 1
        assert runner.threads == {threading.current_thread().name}  # the loop's own thread
        in_flight[0] = 2  # another request is being served: the lane's thread, where it can batch
        await batcher.submit(runner, "decode", rows(3), 5)
        assert runner.threads == {threading.current_thread().name, "cvae-inference_0"}
        await batcher.stop()

    run(body())


def test_requests_arriving_together_batch_instead_of_running_alone_one_by_one() -> None:
    async def body() -> None:
        batcher, in_flight = _counting(0)
        runner = Doubler(delay_s=0.01)

        async def request(i: int) -> None:  # what the middleware does: count, then submit
            in_flight[0] += 1
            try:
                await batcher.submit(runner, "decode", rows(i), 5)
            finally:
                in_flight[0] -= 1

        await asyncio.gather(*(request(i) for i in range(8)))  # the first sees itself alone at first
        assert len(runner.passes) < 8 and sum(n for _, n in runner.passes) == 8
        assert runner.threads == {"cvae-inference_0"}  # none was computed on the loop
        await batcher.stop()

    run(body())


def test_the_row_budget_splits_big_requests_into_separate_passes() -> None:
    async def body() -> None:
        batcher = Batcher(max_batch_size=64, max_wait_ms=20, max_queue_depth=100, max_batch_rows=5)
        batcher.start()
        runner = Doubler()
        await asyncio.gather(*(batcher.submit(runner, "decode", rows(*range(3)), 5) for _ in range(3)))
        assert [n for _, n in runner.passes] == [3, 3, 3]
        await batcher.stop()

    run(body())


def test_a_full_queue_refuses_at_once() -> None:
    async def body() -> None:
        batcher, runner = await _started(max_queue_depth=3, max_wait_ms=200), Doubler()
        accepted = [asyncio.create_task(batcher.submit(runner, "decode", rows(i), 5)) for i in range(3)]
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        with pytest.raises(Overloaded, match="queue is full"):
            await batcher.submit(runner, "decode", rows(9), 5)
        assert time.perf_counter() - started < 0.05
        assert len(await asyncio.gather(*accepted)) == 3  # the accepted ones still complete
        await batcher.submit(runner, "decode", rows(1), 5)  # and the queue recovers at once
        await batcher.stop()

    run(body())


def test_a_timed_out_request_is_dropped_before_computing() -> None:
    async def body() -> None:
        batcher, runner = await _started(max_wait_ms=300), Doubler()
        with pytest.raises(InferenceTimeout, match="0.05 s"):
            await batcher.submit(runner, "decode", rows(1), 0.05)
        await asyncio.sleep(0.4)
        assert runner.passes == []  # nobody waited for it any more
        await batcher.stop()

    run(body())


def test_a_failing_pass_fails_its_requests_and_the_worker_survives() -> None:
    async def body() -> None:
        batcher, bad, good = await _started(), Doubler(fail=True), Doubler()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(bad, "decode", rows(1), 5)
        outputs, _ = await batcher.submit(good, "decode", rows(2), 5)
        assert outputs[0].item() == 4
        await batcher.stop()

    run(body())


def test_stop_drains_queued_work_then_refuses_new_work() -> None:
    async def body() -> None:
        batcher, runner = await _started(max_wait_ms=100, max_batch_size=2), Doubler(delay_s=0.05)
        pending = [asyncio.create_task(batcher.submit(runner, "decode", rows(i), 5)) for i in range(5)]
        await asyncio.sleep(0.01)
        await batcher.stop()
        assert all(task.done() and not task.exception() for task in pending)
        with pytest.raises(NotReady, match="shutting down"):
            await batcher.submit(runner, "decode", rows(1), 5)

    run(body())


class Stepping(Doubler):
    """A Doubler whose passes take the given seconds in turn (the last one from then on)."""

    def __init__(self, *delays: float):
        super().__init__()
        self.delays = list(delays)

    def run(self, kind: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.delay_s = self.delays.pop(0) if len(self.delays) > 1 else self.delays[0]
        return super().run(kind, *inputs)


def _calibration_jobs(rows_: int) -> list[tuple[int, int, object, object]]:
    return [(rows_, 0, lambda: rows(*range(rows_)), None)]


def test_calibration_keeps_each_rate_s_fastest_round() -> None:
    """A first round slowed down (one-off costs, a busy moment) does not set the estimates."""

    async def body() -> None:
        batcher = Batcher(64, 0, 100)
        kept = await batcher.calibrate(Stepping(0.2, 0.02, 0.05), "decode", _calibration_jobs(20))  # type: ignore[arg-type]
        assert kept
        assert 0.02 / 20 <= batcher.cost.row_s < 0.04 / 20  # the 20 ms round, not 200 or 50 ms
        assert batcher.cost.followed == set()  # measured by calibration, not by requests
        await batcher.stop()

    run(body())


def test_calibration_keeps_nothing_when_a_request_came_meanwhile() -> None:
    """Rounds measured beside requests are not the machine's speed; the requests measure the pace."""

    async def body() -> None:
        batcher = await _started(max_wait_ms=0)
        before = batcher.cost.row_s
        calibration = asyncio.create_task(
            batcher.calibrate(Stepping(0.05), "decode", _calibration_jobs(20))  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.02)
        out, _ = await batcher.submit(Doubler(), "decode", rows(1.0), timeout_s=5)
        assert out[0].tolist() == [[2.0]]
        assert await calibration is False
        assert batcher.cost.row_s == before
        await batcher.stop()

    run(body())


def test_idle_time_counts_from_the_last_request_and_is_zero_while_work_waits() -> None:
    async def body() -> None:
        batcher = await _started(max_wait_ms=0)
        slow = asyncio.create_task(batcher.submit(Doubler(0.2), "decode", rows(*range(20)), timeout_s=5))
        await asyncio.sleep(0.1)
        assert batcher.idle_s() == 0.0
        await slow
        await asyncio.sleep(0.1)
        assert 0.05 < batcher.idle_s() < 1.0
        await batcher.stop()

    run(body())
