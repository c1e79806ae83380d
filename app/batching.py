"""The dynamic batcher: many small requests share one forward pass; work is admitted by time, not count.

A request submits a `Job`: rows for one engine and one kind of work, with the request's deadline. The
job's inputs may be built on the inference thread (`prepare`) and its rows turned into the final
answer there too (`finish`: painting tiles, encoding the PNG), so the event loop only parses, awaits
and sends.

Two lanes, each with its own queue, worker task and thread: small jobs (at most SMALL_JOB_ROWS rows
and SMALL_JOB_PIXELS output pixels: nearly every request) on the inference thread, large ones (e.g.
32 digits x 16 samples x scale 8) on a second thread at a lower OS priority. A light request never
waits behind large ones, and the event loop and the small lane keep the CPU when large work piles up.

Admission: a `CostModel` estimates each job's seconds (forward rows, rendered pixels, a fixed part;
rates measured at start-up and followed as the threads work). A job is refused at once (`Overloaded`,
503 + Retry-After) when ADMISSION_MARGIN x (the estimated work of its lane ahead of it + its own)
would end after its deadline, or when `max_queue_depth` jobs already wait. The margin covers what
the estimate cannot see: a burst shares the cores with the HTTP side and the other lane.

A small job that is the only request the process is serving, with both lanes idle, is computed right
away on the event loop (`_run_alone`): for one client the two thread hand-offs cost more than the
job. The check is made again after one turn of the loop, so requests that arrived together see each
other and batch.

A lane's worker takes the next job, gathers more (small lane) until `max_batch_size` jobs, the row
budget or `max_batch_wait_ms` (it does not wait when no other request is being served), and runs the
batch on its thread: one forward pass per (engine, kind) group, each job getting its own rows. Jobs
that can no longer finish before their deadline, or whose caller gave up (timeout, disconnected
client), are dropped before their forward pass. After each large job its lane's queue is checked at
the pace just measured, and the jobs that can no longer make it are refused then, not at their deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from app import metrics
from app.exceptions import ClientGone, InferenceTimeout, NotReady, Overloaded

log = logging.getLogger("app.batching")
_REJECTED_QUEUE_FULL = metrics.REJECTED.labels("queue_full")
_REJECTED_TIMEOUT = metrics.REJECTED.labels("timeout")
_REJECTED_GONE = metrics.REJECTED.labels("client_gone")

Outputs = tuple[torch.Tensor, ...]
# The small lane: jobs of at most this many rows and output pixels (by size, not by a measured time,
# which a busy machine inflates): every request but the biggest renderings.
SMALL_JOB_ROWS = 256
SMALL_JOB_PIXELS = 2_000_000
ADMISSION_MARGIN = 2.0
# A job this small, when it is the only request in the process, is computed on the event loop itself
# (about a millisecond at most): no thread hand-off there and back.
ALONE_MAX_ROWS = 16
ALONE_MAX_PIXELS = 100_000
WATCH_CLIENT_AFTER_S = 0.25  # watch for a disconnect only when the estimated wait is longer than this
LARGE_LANE_NICE = 10  # OS priority offset of the large lane's thread
CALIBRATION_ROUNDS = 3
RATES = ("job_s", "row_s", "pixel_s")  # the cost model's rates
_SMALL, _LARGE = 0, 1


class Runner(Protocol):
    """What the batcher computes with: an engine's batched `run`."""

    def run(self, kind: str, *inputs: torch.Tensor) -> Outputs: ...


@dataclass(frozen=True)
class BatchStats:
    """How a request's work was computed: its wait, the pass's time and how many shared it."""

    queue_ms: float
    compute_ms: float
    batch_size: int
    batch_rows: int


class CostModel:
    """Estimated seconds of a job on the inference thread: a fixed part + rows x row time + pixels x pixel
    time. Each rate starts from a guess, takes its first measurement as is, then follows a moving average
    of what the thread measures."""

    def __init__(
        self, job_s: float = 2e-4, row_s: float = 2e-5, pixel_s: float = 1.5e-8, weight: float = 0.2
    ):
        self.job_s, self.row_s, self.pixel_s = job_s, row_s, pixel_s
        self.weight = weight
        self._seen: set[str] = set()
        self.followed: set[str] = set()  # rates that requests measured since the last calibration

    def estimate(self, jobs: int, rows: int, pixels: int) -> float:
        return jobs * self.job_s + rows * self.row_s + pixels * self.pixel_s

    def observe_pass(self, rows: int, seconds: float) -> None:
        """A forward pass of `rows` took `seconds`."""
        if rows >= 16:  # smaller passes are mostly fixed cost
            self._follow("row_s", seconds / rows)

    def observe_finish(self, pixels: int, seconds: float) -> None:
        """Building and finishing one job's answer of `pixels` pixels took `seconds`."""
        if pixels >= 200_000:
            self._follow("pixel_s", max(0.0, seconds - self.job_s) / pixels)
        else:
            self._follow("job_s", max(0.0, seconds - pixels * self.pixel_s))

    def rates(self) -> tuple[float, ...]:
        """The rates in RATES order: seconds a job, a row, a pixel."""
        return tuple(getattr(self, rate) for rate in RATES)

    def adopt(self, rounds: list[CostModel]) -> None:
        """Each rate from the fastest of calibration `rounds` that measured it, taken as measured: a busy
        moment only slows a round down, and the first round also pays one-off costs (allocations)."""
        for rate in RATES:
            measured = [getattr(r, rate) for r in rounds if rate in r._seen]
            if measured:
                setattr(self, rate, min(measured))
                self._seen.add(rate)
        self.followed.clear()

    def _follow(self, rate: str, measured: float) -> None:
        old = getattr(self, rate)
        new = old + self.weight * (measured - old) if rate in self._seen else measured
        self._seen.add(rate)
        self.followed.add(rate)
        setattr(self, rate, new)


@dataclass(eq=False)
class Job:
    """One request's rows for one forward pass, and how to build and finish them."""

    runner: Runner
    kind: str
    rows: int
    deadline: float  # time.perf_counter() by which the answer is due
    future: asyncio.Future[tuple[Any, BatchStats]]
    inputs: Outputs | None = None
    prepare: Callable[[], Outputs] | None = None  # builds the inputs on the inference thread
    finish: Callable[[Outputs], Any] | None = None  # the answer from the job's output rows (thread)
    pixels: int = 0  # pixels `finish` renders (for the cost model)
    lane: int = _SMALL
    enqueued: float = field(default_factory=time.perf_counter)


class _Lane:
    """One lane: its queue, what waits in it, the batch being computed, its worker's wake-up and thread."""

    def __init__(self, thread_name: str, initializer: Callable[[], None] | None = None):
        self.queue: collections.deque[Job] = collections.deque()
        self.waiting = [0, 0, 0]  # jobs, rows, pixels submitted whose pass has not started
        self.running: list[Job] = []
        self.running_size = (0, 0, 0)  # jobs, rows, pixels of `running`
        self.arrived = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=thread_name, initializer=initializer)
        self.worker: asyncio.Task[None] | None = None


def _lane_index(rows: int, pixels: int) -> int:
    return _SMALL if rows <= SMALL_JOB_ROWS and pixels <= SMALL_JOB_PIXELS else _LARGE


def _lower_priority() -> None:
    """Run this thread at a lower OS priority (Linux: a thread has its own nice value)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LARGE_LANE_NICE)


class Batcher:
    """Two lanes (queue + worker + thread each) with admission by estimated time and deadline."""

    def __init__(
        self,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue_depth: int,
        max_batch_rows: int = 4096,
        requests_in_flight: Callable[[], int] | None = None,
        cost: CostModel | None = None,
    ):
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch_rows = max_batch_rows
        self.max_queue_depth = max_queue_depth
        self.cost = cost or CostModel()
        self._lanes = (_Lane("cvae-inference"), _Lane("cvae-inference-large", _lower_priority))
        self._closing = False
        self._last_request = time.perf_counter()
        self._requests_in_flight = requests_in_flight  # None: always wait up to max_wait_ms, never inline

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the lanes' worker tasks on the running loop."""
        loop = asyncio.get_running_loop()
        for index, lane in enumerate(self._lanes):
            lane.worker = loop.create_task(self._work(lane), name=f"cvae-batcher-{index}")

    async def stop(self) -> None:
        """Refuse new work, finish every queued job, then stop the workers and the threads."""
        self._closing = True
        for lane in self._lanes:
            if lane.worker is not None:
                while lane.waiting[0] or lane.running:
                    lane.idle.clear()
                    await lane.idle.wait()
                lane.worker.cancel()
                await asyncio.gather(lane.worker, return_exceptions=True)
            lane.executor.shutdown(wait=True)

    async def calibrate(
        self, runner: Runner, kind: str, jobs: list[tuple[int, int, Callable, Callable]]
    ) -> bool:
        """Run (rows, pixels, prepare, finish) jobs one by one straight on their lane's thread (no queue,
        no metrics), CALIBRATION_ROUNDS times; the cost model then starts from the fastest round's rates
        (`CostModel.adopt`): this machine's speed, now. Nothing is kept (False) when a request came
        meanwhile: the rounds were then measured beside it, and the requests' own passes measure
        the pace under load anyway."""
        loop = asyncio.get_running_loop()
        last_request, rounds = self._last_request, []
        for _ in range(CALIBRATION_ROUNDS):
            measured = CostModel()
            for rows, pixels, prepare, finish in jobs:
                job = Job(runner, kind, rows, math.inf, loop.create_future(), None, prepare, finish, pixels)
                lane = self._lanes[_lane_index(rows, pixels)]
                await loop.run_in_executor(lane.executor, _compute, [job], measured)
            rounds.append(measured)
        if self._last_request != last_request:
            return False
        self.cost.adopt(rounds)
        return True

    def idle_s(self) -> float:
        """Seconds since the last request came, 0 while a job waits or is computed."""
        if any(lane.waiting[0] or lane.running for lane in self._lanes):
            return 0.0
        return time.perf_counter() - self._last_request

    # -- requests ------------------------------------------------------------------------------
    async def submit(
        self, runner: Runner, kind: str, inputs: Outputs, timeout_s: float
    ) -> tuple[Outputs, BatchStats]:
        """Queue rows for a forward pass and wait (at most `timeout_s`) for this request's slice."""
        deadline = time.perf_counter() + timeout_s
        return await self.run(runner, kind, rows=int(inputs[0].shape[0]), deadline=deadline, inputs=inputs)

    async def run(
        self,
        runner: Runner,
        kind: str,
        *,
        rows: int,
        deadline: float,
        inputs: Outputs | None = None,
        prepare: Callable[[], Outputs] | None = None,
        finish: Callable[[Outputs], Any] | None = None,
        pixels: int = 0,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[Any, BatchStats]:
        """Admit a job (or refuse it at once), then wait until `deadline` for its answer: `finish` of its
        output rows, or the rows themselves. `disconnected` completes when the client goes away."""
        if self._closing:
            raise NotReady("the server is shutting down; retry on another instance")
        now = self._last_request = time.perf_counter()
        own = self.cost.estimate(1, rows, pixels)
        index = _lane_index(rows, pixels)
        lane = self._lanes[index]
        ahead = self._admit(now, own, lane, deadline)
        loop = asyncio.get_running_loop()
        job = Job(runner, kind, rows, deadline, loop.create_future(), inputs, prepare, finish, pixels, index)
        if rows <= ALONE_MAX_ROWS and pixels <= ALONE_MAX_PIXELS and self._alone():
            await asyncio.sleep(0)  # requests that arrived with this one start (and are counted) first
            if self._alone():
                return self._run_alone(job)
        self._enqueue(lane, job)
        try:
            if disconnected is not None and ahead + own > WATCH_CLIENT_AFTER_S:
                return await self._wait_or_gone(job, deadline - now, disconnected)
            return await _within(job.future, deadline - now)
        except TimeoutError:
            _REJECTED_TIMEOUT.inc()
            raise InferenceTimeout(
                f"no result within the {deadline - now:.3g} s request timeout; retry shortly"
            ) from None

    def _alone(self) -> bool:
        """True when this process serves no other request and both lanes are idle: a small job then
        costs less computed right here than through the two thread hand-offs, and nothing waits
        behind it (requests arriving meanwhile wait at most its compute time, then batch)."""
        if self._requests_in_flight is None or self._requests_in_flight() != 1:
            return False
        return not any(lane.waiting[0] or lane.running for lane in self._lanes)

    def _run_alone(self, job: Job) -> tuple[Any, BatchStats]:
        """A lone small job computed on the calling (event-loop) thread, as its lane's thread would."""
        started = time.perf_counter()
        ((ok, answer),), compute = _compute([job], self.cost)
        asyncio.get_running_loop().call_soon(_record, job.kind, [job], started, compute)  # after the answer
        if not ok:
            raise answer
        return answer, BatchStats((started - job.enqueued) * 1000, compute * 1000, 1, job.rows)

    def _admit(self, now: float, own: float, lane: _Lane, deadline: float) -> float:
        """The estimated seconds of work ahead of a new job in `lane`, or Overloaded."""
        waiting = self.queued_jobs()
        if waiting >= self.max_queue_depth:
            _REJECTED_QUEUE_FULL.inc()
            raise Overloaded(f"the inference queue is full ({waiting} requests waiting); retry shortly")
        ahead = self.cost.estimate(*lane.waiting) + self.cost.estimate(*lane.running_size)
        if now + ADMISSION_MARGIN * (ahead + own) > deadline:
            _REJECTED_QUEUE_FULL.inc()
            raise Overloaded(
                f"the inference queue is full: about {ahead:.2f} s of work waits and this request needs "
                f"{own:.3f} s, too much for its {deadline - now:.3g} s deadline; retry shortly"
            )
        return ahead

    async def _wait_or_gone(
        self, job: Job, timeout_s: float, disconnected: Callable[[], Awaitable[object]]
    ) -> tuple[Any, BatchStats]:
        gone = asyncio.ensure_future(disconnected())
        try:
            done, _ = await asyncio.wait(
                (job.future, gone), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            gone.cancel()
        if job.future in done:
            return job.future.result()
        job.future.cancel()  # dropped before its forward pass, if it has not started
        if gone in done:
            _REJECTED_GONE.inc()
            raise ClientGone("the client closed the connection before its answer was ready")
        raise TimeoutError

    def _enqueue(self, lane: _Lane, job: Job) -> None:
        lane.queue.append(job)
        self._count(lane, job, +1)
        lane.arrived.set()

    @staticmethod
    def _count(lane: _Lane, job: Job, sign: int) -> None:
        waiting = lane.waiting
        waiting[0] += sign
        waiting[1] += sign * job.rows
        waiting[2] += sign * job.pixels

    def queued_jobs(self) -> int:
        """Jobs submitted whose forward pass has not started (the `cvae_queue_depth` gauge)."""
        return self._lanes[_SMALL].waiting[0] + self._lanes[_LARGE].waiting[0]

    # -- workers -------------------------------------------------------------------------------
    async def _work(self, lane: _Lane) -> None:
        while True:
            if not lane.waiting[0]:
                lane.idle.set()
                lane.arrived.clear()
                await lane.arrived.wait()
            batch = await self._gather(lane)
            for job in batch:
                self._count(lane, job, -1)  # their forward pass starts now
            lane.running = batch
            lane.running_size = (len(batch), sum(j.rows for j in batch), sum(j.pixels for j in batch))
            try:
                for group in _group(batch):
                    await self._execute(lane, group)
            except Exception:  # never let the worker die: fail this batch, keep serving
                log.exception("batch failed unexpectedly")
                _fail(batch, RuntimeError("inference failed"))
            finally:
                lane.running = []
                lane.running_size = (0, 0, 0)
            if lane is self._lanes[_LARGE]:
                self._shed_late(lane)

    def _shed_late(self, lane: _Lane) -> None:
        """Refuse now the queued jobs that can no longer finish before their deadline at the lane's
        measured pace (the cost model follows what the thread measures), instead of at their deadline:
        when the lane falls behind what admission estimated (a busy machine), their clients learn it
        seconds earlier and can retry elsewhere. Run between the large lane's jobs: each is big and
        its queue is short; small jobs are checked just before their pass (`_execute`)."""
        now = time.perf_counter()
        kept: collections.deque[Job] = collections.deque()
        jobs = rows = pixels = 0  # the work ahead of the next job, kept so far
        for job in lane.queue:
            if job.future.done():  # its caller gave up (timeout, disconnect): nothing to compute
                self._count(lane, job, -1)
                continue
            finish = now + self.cost.estimate(jobs + 1, rows + job.rows, pixels + job.pixels)
            if finish > job.deadline:
                self._count(lane, job, -1)
                _REJECTED_TIMEOUT.inc()
                job.future.set_exception(
                    InferenceTimeout(
                        f"the request cannot be computed within its deadline at the present pace (about "
                        f"{finish - now:.2f} s of work, {job.deadline - now:.2f} s left); retry shortly"
                    )
                )
                continue
            kept.append(job)
            jobs, rows, pixels = jobs + 1, rows + job.rows, pixels + job.pixels
        lane.queue = kept

    async def _gather(self, lane: _Lane) -> list[Job]:
        """The lane's next batch: the first job, then (small lane) more until the batch is full, the row
        budget is spent or the wait is over (waiting only while other requests are in flight). Gathered
        jobs still count as waiting until their pass starts."""
        queue = lane.queue
        first = queue.popleft()
        batch, rows = [first], first.rows
        if lane is self._lanes[_LARGE]:
            return batch
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not queue:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._nobody_else_coming():
                    break
                lane.arrived.clear()
                try:
                    await asyncio.wait_for(lane.arrived.wait(), remaining)
                except TimeoutError:
                    break
                continue
            if rows + queue[0].rows > self.max_batch_rows:
                break  # it heads the next batch
            job = queue.popleft()
            rows += job.rows
            batch.append(job)
        return batch

    def _nobody_else_coming(self) -> bool:
        """True when every request being served is already gathered or queued: waiting is futile."""
        if self._requests_in_flight is None:
            return False
        return self._requests_in_flight() <= self.queued_jobs()

    async def _execute(self, lane: _Lane, group: list[Job]) -> None:
        """One forward pass for jobs of one (runner, kind); each job gets its answer or its error."""
        now = time.perf_counter()
        live = []
        for job in group:
            if job.future.done():  # its caller gave up (timeout, disconnect): nothing to compute
                continue
            if now + self.cost.estimate(1, job.rows, job.pixels) > job.deadline:  # it could not make it
                _REJECTED_TIMEOUT.inc()
                job.future.set_exception(
                    InferenceTimeout("the request could not be computed within its deadline; retry shortly")
                )
                continue
            live.append(job)
        if not live:
            return
        try:
            answers, compute = await asyncio.get_running_loop().run_in_executor(
                lane.executor, _compute, live, self.cost
            )
        except Exception as exc:
            log.exception("forward pass of %d %s jobs failed", len(live), live[0].kind)
            _fail(live, exc)
            return
        asyncio.get_running_loop().call_soon(_record, live[0].kind, live, now, compute)  # after the answers
        rows = sum(job.rows for job in live)
        for job, (ok, answer) in zip(live, answers, strict=True):
            if job.future.done():
                continue
            if ok:
                stats = BatchStats((now - job.enqueued) * 1000, compute * 1000, len(live), rows)
                job.future.set_result((answer, stats))
            else:
                job.future.set_exception(answer)


async def _within(future: asyncio.Future[Any], timeout_s: float) -> Any:
    """`future`'s result, or TimeoutError (set on the future, so the batcher drops its job) after
    `timeout_s`: one timer, where `asyncio.wait_for` adds a waiter future and callbacks per request."""
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _compute(live: list[Job], cost: CostModel) -> tuple[list[tuple[bool, Any]], float]:
    """On the inference thread: build the inputs, ONE forward pass, then each job's answer (an error
    of one job's `finish` fails that job only). Returns the answers and the forward pass's seconds."""
    inputs = [job.inputs if job.inputs is not None else job.prepare() for job in live]  # type: ignore[misc]
    started = time.perf_counter()
    joined = inputs[0] if len(live) == 1 else _concat(inputs)
    outputs = live[0].runner.run(live[0].kind, *joined)
    compute = time.perf_counter() - started
    cost.observe_pass(sum(job.rows for job in live), compute)
    parts = zip(*(torch.split(out, [job.rows for job in live]) for out in outputs), strict=True)
    answers: list[tuple[bool, Any]] = []
    for job, part in zip(live, parts, strict=True):
        if job.finish is None:
            answers.append((True, tuple(part)))
            continue
        began = time.perf_counter()
        try:
            answers.append((True, job.finish(tuple(part))))
        except Exception as exc:  # noqa: BLE001 - handed to that job's caller
            answers.append((False, exc))
        cost.observe_finish(job.pixels, time.perf_counter() - began)
    return answers, compute


def _group(batch: list[Job]) -> list[list[Job]]:
    """Jobs grouped by (runner, kind), in arrival order of each group's first job."""
    groups: dict[tuple[int, str], list[Job]] = {}
    for job in batch:
        groups.setdefault((id(job.runner), job.kind), []).append(job)
    return list(groups.values())


def _concat(inputs: list[Outputs]) -> Outputs:
    return tuple(torch.cat(column) for column in zip(*inputs, strict=True))


def _fail(jobs: list[Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)


def _record(kind: str, jobs: list[Job], started: float, compute: float) -> None:
    """The batch's figures in the histograms (scheduled on the loop after its answers go out)."""
    size, rows, seconds, wait = _batch_metrics(kind)
    size.observe(len(jobs))
    rows.observe(sum(job.rows for job in jobs))
    seconds.observe(compute)
    for job in jobs:
        wait.observe(started - job.enqueued)


@functools.cache
def _batch_metrics(kind: str) -> tuple[Any, ...]:
    """The batch histograms' children of a kind, labelled once."""
    histograms = (metrics.BATCH_SIZE, metrics.BATCH_ROWS, metrics.COMPUTE, metrics.QUEUE_WAIT)
    return tuple(histogram.labels(kind) for histogram in histograms)
