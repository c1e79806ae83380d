"""The dynamic batcher: many small requests share one forward pass.

Requests put a `Job` (rows of input tensors for one engine and one kind of work) on an asyncio
queue; once `max_queue_depth` jobs wait for their forward pass (in the queue or in the batch being
gathered) new work is refused at once (`Overloaded`). One worker task takes the first
waiting job, gathers more until `max_batch_size` jobs, a row budget or `max_batch_wait_ms` is
reached (it does not wait when no other request is being served, so a lone client pays no
batching delay), concatenates the rows of jobs with the same (engine, kind), runs ONE forward pass per group
on a single inference thread (off the event loop) and hands each job its slice of the outputs.
Jobs whose caller gave up (timeout, disconnect) are dropped before computing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch

from app import metrics
from app.exceptions import InferenceTimeout, NotReady, Overloaded

log = logging.getLogger("app.batching")

Outputs = tuple[torch.Tensor, ...]


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


@dataclass
class Job:
    """One request's rows for one forward pass."""

    runner: Runner
    kind: str
    inputs: tuple[torch.Tensor, ...]
    future: asyncio.Future[tuple[Outputs, BatchStats]]
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def rows(self) -> int:
        return int(self.inputs[0].shape[0])


class Batcher:
    """Bounded queue + one worker + one inference thread."""

    def __init__(
        self,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue_depth: int,
        max_batch_rows: int = 4096,
        requests_in_flight: Callable[[], int] | None = None,
    ):
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch_rows = max_batch_rows
        self.max_queue_depth = max_queue_depth
        self._waiting = 0  # jobs submitted whose forward pass has not started
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._carry: collections.deque[Job] = collections.deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cvae-inference")
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._requests_in_flight = requests_in_flight  # None: always wait up to max_wait_ms

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker task on the running loop."""
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="cvae-batcher")

    async def stop(self) -> None:
        """Refuse new work, finish every queued job, then stop the worker and the thread."""
        self._closing = True
        if self._worker is not None:
            await self._queue.join()
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    # -- requests ------------------------------------------------------------------------------
    async def submit(
        self, runner: Runner, kind: str, inputs: tuple[torch.Tensor, ...], timeout_s: float
    ) -> tuple[Outputs, BatchStats]:
        """Queue rows for a forward pass and wait (at most `timeout_s`) for this request's slice."""
        if self._closing:
            raise NotReady("the server is shutting down; retry on another instance")
        if self._waiting >= self.max_queue_depth:
            metrics.REJECTED.labels("queue_full").inc()
            raise Overloaded(f"the inference queue is full ({self._waiting} requests waiting); retry shortly")
        job = Job(runner, kind, inputs, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        self._set_waiting(+1)
        try:
            return await asyncio.wait_for(job.future, timeout_s)
        except TimeoutError:
            metrics.REJECTED.labels("timeout").inc()
            raise InferenceTimeout(
                f"no result within the {timeout_s:g} s request timeout; retry shortly"
            ) from None

    # -- worker --------------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            first = self._carry.popleft() if self._carry else await self._queue.get()
            batch = [first]
            try:
                await self._fill(batch)
            finally:
                self._set_waiting(-len(batch))  # their forward pass starts now
            try:
                for group in _group(batch):
                    await self._execute(group)
            except Exception:  # never let the worker die: fail this batch, keep serving
                log.exception("batch failed unexpectedly")
                _fail(batch, RuntimeError("inference failed"))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _set_waiting(self, change: int) -> None:
        self._waiting += change
        metrics.QUEUE_DEPTH.inc(change)

    async def _fill(self, batch: list[Job]) -> None:
        """Add waiting jobs to `batch` until it is full, the row budget is spent or the wait is over."""
        deadline = time.perf_counter() + self.max_wait_s
        rows = batch[0].rows
        while len(batch) < self.max_batch_size:
            job = self._carry.popleft() if self._carry else self._next_nowait()
            if job is None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._nobody_else_coming(len(batch)):
                    return
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    return
            if rows + job.rows > self.max_batch_rows:
                self._carry.append(job)  # first in the next batch
                return
            rows += job.rows
            batch.append(job)

    def _nobody_else_coming(self, batched: int) -> bool:
        """True when every request being served is already in this batch or queued: waiting is futile."""
        if self._requests_in_flight is None:
            return False
        return self._requests_in_flight() <= batched + len(self._carry) + self._queue.qsize()

    def _next_nowait(self) -> Job | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _execute(self, group: list[Job]) -> None:
        """One forward pass for jobs of one (runner, kind); each future gets its rows."""
        live = [job for job in group if not job.future.done()]
        if not live:
            return
        head = live[0]
        started = time.perf_counter()
        inputs = head.inputs if len(live) == 1 else _concat([job.inputs for job in live])
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: head.runner.run(head.kind, *inputs)
            )
        except Exception as exc:
            log.exception("forward pass of %d %s jobs failed", len(live), head.kind)
            _fail(live, exc)
            return
        compute = time.perf_counter() - started
        _record(head.kind, live, started, compute)
        sizes = [job.rows for job in live]
        parts = list(zip(*(torch.split(out, sizes) for out in outputs), strict=True))
        rows = sum(sizes)
        for job, part in zip(live, parts, strict=True):
            stats = BatchStats((started - job.enqueued) * 1000, compute * 1000, len(live), rows)
            if not job.future.done():
                job.future.set_result((tuple(part), stats))


def _group(batch: list[Job]) -> list[list[Job]]:
    """Jobs grouped by (runner, kind), in arrival order of each group's first job."""
    groups: dict[tuple[int, str], list[Job]] = {}
    for job in batch:
        groups.setdefault((id(job.runner), job.kind), []).append(job)
    return list(groups.values())


def _concat(inputs: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.cat(column) for column in zip(*inputs, strict=True))


def _fail(jobs: list[Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)


def _record(kind: str, jobs: list[Job], started: float, compute: float) -> None:
    metrics.BATCH_SIZE.labels(kind).observe(len(jobs))
    metrics.BATCH_ROWS.labels(kind).observe(sum(job.rows for job in jobs))
    metrics.COMPUTE.labels(kind).observe(compute)
    for job in jobs:
        metrics.QUEUE_WAIT.labels(kind).observe(started - job.enqueued)
