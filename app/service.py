"""The service object built in the lifespan: settings, model pool, batcher and inference, started and
stopped together. Routes reach it through one typed dependency (`app.api.deps.ServiceDep`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import torch
from fastapi import FastAPI

from app import metrics
from app.batching import Batcher
from app.inference import Inference
from app.middleware import InFlight
from app.model_pool import ModelPool
from app.settings import Settings
from model.device import resolve_device
from model.registry import Registry

log = logging.getLogger("app.service")


@dataclass
class Service:
    """Everything a request needs, owned by the app for its lifetime."""

    settings: Settings
    pool: ModelPool
    batcher: Batcher
    inference: Inference

    @classmethod
    def build(cls, settings: Settings, in_flight: InFlight | None = None) -> Service:
        """Wire the parts from settings (nothing is loaded yet); `in_flight` lets lone requests skip the
        batching wait."""
        pool = ModelPool(
            Registry(settings.registry),
            resolve_device(settings.device),
            settings.max_loaded_versions,
            loads_per_minute=settings.version_loads_per_minute,
        )
        batcher = Batcher(
            settings.max_batch_size,
            settings.max_batch_wait_ms,
            settings.max_queue_depth,
            requests_in_flight=(lambda: in_flight.count) if in_flight else None,
        )
        inference = Inference(pool, batcher, settings.default_temperature, settings.request_timeout_s)
        return cls(settings, pool, batcher, inference)

    async def start(self) -> None:
        """Start the batcher and load the active version; an empty or broken registry leaves us unready."""
        torch.set_num_threads(self.settings.intra_op_threads())
        self.batcher.start()
        try:
            engine = await self.pool.get(None)
        except Exception as exc:  # any failure: log it, stay up, answer 503 until a version loads
            log.error("no model loaded at startup, /readyz answers 503: %s", exc)
        else:
            log.info("serving %s on %s", engine.version, engine.device)

    async def stop(self) -> None:
        """Drain queued inference work, then release the worker and this process's live metrics."""
        await self.batcher.stop()
        metrics.mark_process_dead()
        log.info("inference queue drained; stopped")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model when the server starts; drain the batcher when it stops."""
    service = Service.build(app.state.settings, getattr(app.state, "in_flight", None))
    await service.start()
    app.state.service = service
    try:
        yield
    finally:
        await service.stop()
