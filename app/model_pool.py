"""The loaded model versions: a bounded LRU of engines, and which one is active.

The active version is the registry's `active` pointer, re-read whenever the pointer file changes
(a promotion by the admin endpoint, another worker or the training CLI is picked up by every worker).
Loading happens on a helper thread while requests keep being served by the engines already loaded;
a request holds its engine for its whole life, so neither eviction nor a swap can drop it. When a new
active version cannot be loaded, the previous one stays in service and the error is logged.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from app import metrics
from app.catalog import VersionCatalog
from app.engine import Engine
from app.exceptions import NotReady, Overloaded, redact
from model.errors import CheckpointError, ModelError, RegistryError
from model.registry import ACTIVE_FILE, Registry, VersionInfo

log = logging.getLogger("app.model_pool")

POINTER_LABEL = "(active pointer)"  # the `version` label of load failures caused by the pointer itself


@dataclass(frozen=True)
class Catalog:
    """The registry's versions as the pool sees them: which is active, served and loaded, on what device."""

    active: str | None
    serving: str | None
    loaded: list[str]
    device: str
    versions: list[VersionInfo]


class LoadBudget:
    """A token bucket: at most `per_minute` loads a minute, in bursts of at most that many."""

    def __init__(self, per_minute: float):
        self.per_minute = per_minute
        self._tokens = per_minute
        self._stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one load if the budget has one."""
        now = time.monotonic()
        self._tokens = min(self.per_minute, self._tokens + (now - self._stamp) * self.per_minute / 60)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class ModelPool:
    """Versions loaded on one device, at most `capacity` of them, least recently used evicted first.
    Requests naming a version that is not loaded may load it `loads_per_minute` times a minute (the
    admin endpoints are not limited), so anonymous clients cannot keep the pool loading."""

    def __init__(
        self, registry: Registry, device: torch.device, capacity: int, loads_per_minute: float = 6.0
    ):
        self.registry = registry
        self.device = device
        self.capacity = capacity
        self.catalog_cache = VersionCatalog(registry)
        self._load_budget = LoadBudget(loads_per_minute)
        self._engines: collections.OrderedDict[str, Engine] = collections.OrderedDict()
        self._lock = asyncio.Lock()
        self._promote_lock = asyncio.Lock()
        self._promotes_pending = 0
        self._promotes_settled = asyncio.Condition()
        self._pointer_file = str(registry.root / ACTIVE_FILE)  # stat'ed on every request: keep it a str
        self._pointer_stamp: tuple[int, int, int] | None = None
        self._pointer_name: str | None = None
        self._pointer_error: str | None = None  # why the pointer names no version, when it does not
        self._serving: str | None = None  # the active version actually served
        self._failed: dict[str, str] = {}  # active names that could not be loaded -> why

    # -- reading -------------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Names of the loaded versions, least recently used first."""
        return list(self._engines)

    @property
    def serving(self) -> str | None:
        """The active version being served, None before one could be loaded."""
        return self._serving

    def pointer(self) -> str | None:
        """The registry's active pointer, re-read only when its file changed."""
        try:
            stat = os.stat(self._pointer_file)
        except FileNotFoundError:
            self._pointer_stamp = self._pointer_name = None
            return None
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._pointer_stamp:
            self._pointer_stamp = stamp
            self._failed.clear()  # a new pointer deserves a new try
            try:
                self._pointer_name, self._pointer_error = self.registry.active_version(), None
            except RegistryError as exc:  # logged and counted once per change of the pointer file
                self._pointer_name, self._pointer_error = None, str(exc)
                metrics.MODEL_LOAD_FAILURES.labels(POINTER_LABEL).inc()
                log.error(
                    "the registry's active pointer is unusable, still serving %s: %s", self._serving, exc
                )
        if self._pointer_error is not None:
            raise RegistryError(self._pointer_error)
        return self._pointer_name

    async def catalog(self) -> Catalog:
        """Every registry version with the pool's view of it (a pointer naming no version = no active one);
        the metadata comes from a cache, read on a worker thread."""
        try:
            active = self.pointer()
        except RegistryError:
            active = None
        versions = self.catalog_cache.cached()
        if versions is None:
            versions = await asyncio.to_thread(self.catalog_cache.refresh)
        return Catalog(active, self._serving, self.loaded(), str(self.device), versions)

    def artifact(self, version: str, name: str) -> Path:
        """A file the training job saved beside a version's weights (404 unless a regular file inside it)."""
        return self.registry.artifact(version, name)

    # -- serving -------------------------------------------------------------------------------
    async def get(self, version: str | None = None, *, limited: bool = True) -> Engine:
        """The engine of `version`, or of the active version when None; loads it if needed (within the
        load budget when `limited`: a request's `version=`, not the admin's load)."""
        if version is None:
            return await self._active_engine()
        name = self.registry.resolve(version)
        if limited and name not in self._engines and not self._load_budget.take():
            raise Overloaded(
                f"version {name} is not loaded and requests may load at most "
                f"{self._load_budget.per_minute:g} versions a minute; retry later, or ask an admin to load it"
            )
        return await self.load(name)

    async def _active_engine(self) -> Engine:
        try:
            name = self.pointer()
        except RegistryError as exc:
            name, reason = None, str(exc)
        else:
            reason = "no active model version in the registry yet; train and promote one"
        if name is not None and name not in self._failed:
            try:
                engine = await self.load(name)
            except ModelError as exc:  # load() turned any other failure into a CheckpointError
                self._failed[name] = str(exc)
                log.error(
                    "active version %s cannot be loaded, still serving %s: %s", name, self._serving, exc
                )
            else:
                self._set_serving(name)
                return engine
        if name is not None:
            reason = f"the active version {name} cannot be loaded: {self._failed[name]}"
        if self._serving is not None and self._serving in self._engines:
            return self._touch(self._serving)  # keep the last good version in service
        raise NotReady(redact(reason))

    async def load(self, name: str) -> Engine:
        """Load a resolved version (once, even when many requests ask at the same time)."""
        if name in self._engines:
            return self._touch(name)
        async with self._lock:
            if name in self._engines:
                return self._touch(name)
            try:
                engine = await asyncio.to_thread(self._load_sync, name)
            except ModelError:
                metrics.MODEL_LOAD_FAILURES.labels(name).inc()
                raise
            except Exception as exc:  # whatever a bad version does to the constructor or warm-up
                metrics.MODEL_LOAD_FAILURES.labels(name).inc()
                log.error("loading version %s failed", name, exc_info=exc)
                raise CheckpointError(f"version {name} failed to load: {type(exc).__name__}: {exc}") from exc
            self._engines[name] = engine
            self._failed.pop(name, None)
            self._evict()
            self._publish_info()
            return engine

    async def promote(self, version: str) -> Engine:
        """Load `version`, then make it the registry's active version; in-flight requests finish.

        Promotions run one at a time, and each returns only when none is pending any more: promotions
        sent together all answer with the same final active version (`serving`), the one the pointer
        names."""
        name = self.registry.resolve(version)
        self._promotes_pending += 1
        try:
            async with self._promote_lock:
                engine = await self.load(name)
                await asyncio.to_thread(self.registry.promote, name)
                self._set_serving(name)
        finally:
            self._promotes_pending -= 1
            async with self._promotes_settled:
                self._promotes_settled.notify_all()
        async with self._promotes_settled:
            await self._promotes_settled.wait_for(lambda: self._promotes_pending == 0)
        return engine

    # -- internals -----------------------------------------------------------------------------
    def _load_sync(self, name: str) -> Engine:
        engine = Engine(name, self.registry.load(name, device="cpu"), self.device)
        engine.warm_up()
        log.info("loaded model version %s on %s", name, self.device)
        return engine

    def _touch(self, name: str) -> Engine:
        self._engines.move_to_end(name)
        return self._engines[name]

    def _set_serving(self, name: str) -> None:
        if name != self._serving:
            log.info("now serving %s as the active version", name)
            self._serving = name
            self._publish_info()

    def _evict(self) -> None:
        for name in list(self._engines):
            if len(self._engines) <= self.capacity:
                return
            if name not in (self._serving, self._pointer_name):
                del self._engines[name]
                log.info("evicted model version %s (LRU, capacity %d)", name, self.capacity)

    def _publish_info(self) -> None:
        """Mirror the loaded set into the `cvae_model_info` gauge (stale series drop to 0)."""
        device = str(self.device)
        for labels in list(metrics.MODEL_INFO._metrics):  # the label sets published so far
            metrics.MODEL_INFO.labels(*labels).set(0)
        for name in self._engines:
            metrics.MODEL_INFO.labels(name, device, str(name == self._serving).lower()).set(1)
