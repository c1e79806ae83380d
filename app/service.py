"""The service object built in the lifespan: settings, model pool, batcher and inference, started and
stopped together. Routes reach it through one typed dependency (`app.api.deps.ServiceDep`).

In a fleet every replica runs the same loop: a background task polls the registry every
`registry_poll_s` seconds and lets the pool load, warm and switch to a newly active (or pinned)
version; `begin_drain()` (called by the server at SIGTERM) turns /readyz to 503 while requests keep
being answered until the server stops accepting and the batcher has drained.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import torch
from fastapi import FastAPI

from app import metrics
from app.batching import Batcher
from app.drain import drain_on_sigterm
from app.inference import Inference
from app.middleware import InFlight
from app.model_pool import ModelPool
from app.settings import Settings
from model.device import resolve_device
from model.registry import Registry

log = logging.getLogger("app.service")
# The live gauges (requests in flight, jobs queued) are set from their counts this often and at every
# scrape, not written per request: in multiprocess mode each gauge write is a write to a shared file.
GAUGE_SAMPLE_S = 0.1
# Until requests have measured the forward pass, the admission estimates are measured again while the
# server is idle (no request for IDLE_S): 1 s after start, then at doubling intervals up to every 10
# minutes (9 calibrations in an idle server's first 10 minutes, about 30 ms of CPU each with the
# shipped model). A start on a busy machine (a rolling update, other pods starting) measures a slow
# machine, and estimates that slow would refuse work the machine can do until traffic corrected them.
# A newly served version (or the first one, when the registry was empty at start) starts over.
RECALIBRATE_FIRST_S = 1.0
RECALIBRATE_MAX_S = 600.0
IDLE_S = 2.0


@dataclass
class Service:
    """Everything a request needs, owned by the app for its lifetime."""

    settings: Settings
    pool: ModelPool
    batcher: Batcher
    inference: Inference
    in_flight: InFlight | None = None
    draining: bool = False
    _poller: asyncio.Task[None] | None = field(default=None, repr=False)
    _sampler: asyncio.Task[None] | None = field(default=None, repr=False)
    _calibrator: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings, in_flight: InFlight | None = None) -> Service:
        """Wire the parts from settings (nothing is loaded yet); `in_flight` lets lone requests skip the
        batching wait."""
        pool = ModelPool(
            Registry(settings.registry),
            resolve_device(settings.device),
            settings.max_loaded_versions,
            pinned=settings.model_version,
            loads_per_minute=settings.version_loads_per_minute,
        )
        batcher = Batcher(
            settings.max_batch_size,
            settings.max_batch_wait_ms,
            settings.max_queue_depth,
            requests_in_flight=(lambda: in_flight.count) if in_flight else None,
        )
        inference = Inference(pool, batcher, settings.default_temperature, settings.request_timeout_s)
        return cls(settings, pool, batcher, inference, in_flight)

    async def start(self) -> None:
        """Start the batcher, load the target version, start the registry poll; an empty or broken
        registry leaves us up but unready (503) until a good version becomes active. The service owns its
        process (a uvicorn worker): what exists once it has started is frozen out of the garbage
        collector's full collections (`freeze_startup_objects`)."""
        torch.set_num_threads(self.settings.intra_op_threads(cuda=self.pool.device.type == "cuda"))
        metrics.DRAINING.set(0)
        self.batcher.start()
        self._sampler = asyncio.get_running_loop().create_task(self._sample(), name="cvae-gauges")
        served = await self._sync()
        if served is None:
            log.error("no model loaded at startup, /readyz answers 503: %s", self.pool.problem)
        else:
            await self._calibrate()
            log.info("serving %s on %s", served, self.pool.device)
        loop = asyncio.get_running_loop()
        if self.settings.registry_poll_s > 0:
            self._poller = loop.create_task(self._poll(), name="cvae-registry-poll")
        self._calibrator = loop.create_task(self._recalibrate(served), name="cvae-calibration")
        freeze_startup_objects()

    async def _calibrate(self) -> None:
        """Admission estimates from this machine's speed (a failure leaves the estimates as they were)."""
        before = self.batcher.cost.rates()
        try:
            kept = await self.inference.calibrate()
        except Exception as exc:  # noqa: BLE001 - serving matters more than the estimates
            log.warning("admission estimates not measured: %s", exc)
            return
        if not kept:
            return
        after = self.batcher.cost.rates()
        # Info when a large job's rates moved 2x (a start measured on a busy machine, corrected); a
        # request's fixed part (a fraction of a millisecond) moves that much with the machine's noise.
        moved = any(new > 2 * old or old > 2 * new for old, new in zip(before[1:], after[1:], strict=True))
        log.log(
            logging.INFO if moved else logging.DEBUG,
            "admission estimates: %.3f ms a request + %.2f us a row + %.2f ns a pixel "
            "(were %.3f + %.2f + %.2f)",
            after[0] * 1e3,
            after[1] * 1e6,
            after[2] * 1e9,
            before[0] * 1e3,
            before[1] * 1e6,
            before[2] * 1e9,
        )

    async def _recalibrate(self, calibrated_for: str | None) -> None:
        """Measure the admission estimates again while idle, until requests measure them (see
        RECALIBRATE_FIRST_S); soon after the served version changes (or the first one is loaded)."""
        loop = asyncio.get_running_loop()
        interval = RECALIBRATE_FIRST_S
        due = loop.time() + interval
        while True:
            await asyncio.sleep(1.0)
            serving = self.pool.serving
            if serving != calibrated_for:
                calibrated_for, interval, due = serving, RECALIBRATE_FIRST_S, loop.time()
                self.batcher.cost.followed.clear()  # what requests measured was another model's pace
            if (
                serving is None
                or loop.time() < due
                or "row_s" in self.batcher.cost.followed  # requests measured the pass: they know best
                or self.batcher.idle_s() < IDLE_S
            ):
                continue
            await self._calibrate()
            interval = min(2 * interval, RECALIBRATE_MAX_S)
            due = loop.time() + interval

    def begin_drain(self) -> bool:
        """From now on /readyz answers 503; requests are still answered until the server stops.
        True when this call started the drain."""
        if self.draining:
            return False
        self.draining = True
        metrics.DRAINING.set(1)
        log.info("draining: /readyz answers 503, in-flight and queued requests finish")
        return True

    async def stop(self) -> None:
        """Stop polling, drain queued inference work, then release the worker and the live metrics."""
        self.begin_drain()
        await _cancel(self._poller)
        await _cancel(self._calibrator)
        await self.batcher.stop()
        await _cancel(self._sampler)
        self.sample_gauges()
        metrics.mark_process_dead()
        log.info("inference queue drained; stopped")

    def sample_gauges(self) -> None:
        """Set the live gauges from the counts (see GAUGE_SAMPLE_S); /metrics calls it before rendering."""
        metrics.IN_FLIGHT.set(self.in_flight.count if self.in_flight is not None else 0)
        metrics.QUEUE_DEPTH.set(self.batcher.queued_jobs())

    async def _sample(self) -> None:
        while True:
            self.sample_gauges()
            await asyncio.sleep(GAUGE_SAMPLE_S)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.registry_poll_s)
            await self._sync()

    async def _sync(self) -> str | None:
        try:
            return await self.pool.sync()
        except Exception:  # never let the poll die (e.g. the registry volume is unreachable for a while)
            log.exception("registry poll failed; still serving %s", self.pool.serving)
            return self.pool.serving


def freeze_startup_objects() -> None:
    """Keep what startup built (imported modules, the model) out of the garbage collector's full
    collections: they walked all of it (about 200,000 objects) and paused the event loop for about
    100 ms each, at random moments of a burst. After `gc.freeze()` they walk only what requests made."""
    gc.collect()
    gc.freeze()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model when the server starts (and drain on SIGTERM); drain the batcher when it stops."""
    service = Service.build(app.state.settings, getattr(app.state, "in_flight", None))
    await service.start()
    app.state.service = service
    restore_sigterm = drain_on_sigterm(service.begin_drain, service.settings.drain_delay_s)
    try:
        yield
    finally:
        restore_sigterm()
        await service.stop()
