"""The loaded model versions: a bounded LRU of engines, and which one is served by default.

The served version follows a target: the pinned version (`model_version` setting) when there is one,
else the registry's `active` pointer. `sync()` moves to the target: it loads and warms the target on a
helper thread while requests keep being served by the engine already in service, then switches in one
step. The service calls it at start-up and from a background poll (`registry_poll_s`), so a request
never waits for a load: a promotion by the admin endpoint, another replica or the training job reaches
every replica within one poll interval plus the load time. A request holds its engine for its whole
life, so neither eviction nor a swap can drop it. A target that cannot be loaded (corrupt,
incompatible) leaves the served version in service; the reason is logged once and counted in
`cvae_model_load_failures_total`, and the load is tried again only when the pointer changes.
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
from app.exceptions import InvalidInput, NotReady, Overloaded, redact
from model.errors import CheckpointError, ModelError, RegistryError
from model.registry import ACTIVE_FILE, Registry, VersionInfo

log = logging.getLogger("app.model_pool")

NO_ACTIVE = (
    "no active model version in the registry yet: seed it with the shipped model (python -m model.shipped "
    "--registry REGISTRY) or train one (python -m training)"
)
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
        self,
        registry: Registry,
        device: torch.device,
        capacity: int,
        pinned: str | None = None,
        loads_per_minute: float = 6.0,
    ):
        self.registry = registry
        self.device = device
        self.capacity = capacity
        self.pinned = pinned
        self.catalog_cache = VersionCatalog(registry)
        self._load_budget = LoadBudget(loads_per_minute)
        self._engines: collections.OrderedDict[str, Engine] = collections.OrderedDict()
        self._lock = asyncio.Lock()
        self._promote_lock = asyncio.Lock()
        self._promotes_pending = 0
        self._promotes_settled = asyncio.Condition()
        self._pointer_file = str(registry.root / ACTIVE_FILE)
        self._pointer_stamp: tuple[int, int, int] | None = None
        self._pointer_name: str | None = None
        self._pointer_error: str | None = None  # why the pointer names no version, if it does not
        self._serving: str | None = None  # the version requests without `version` get
        self._failed: dict[str, str] = {}  # targets that could not be loaded -> why
        self._problem: str | None = NO_ACTIVE  # why the target is not served (None when it is)

    # -- reading -------------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Names of the loaded versions, least recently used first."""
        return list(self._engines)

    @property
    def serving(self) -> str | None:
        """The version being served by default, None before one could be loaded."""
        return self._serving

    @property
    def problem(self) -> str | None:
        """Why the target version is not served (None when it is)."""
        return self._problem

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
            except RegistryError as exc:  # counted and logged once per change of the pointer file
                self._pointer_name, self._pointer_error = None, str(exc)
                metrics.MODEL_LOAD_FAILURES.labels(POINTER_LABEL).inc()
                log.error(
                    "the registry's active pointer is unusable, still serving %s: %s", self._serving, exc
                )
        if self._pointer_error is not None:
            raise RegistryError(self._pointer_error)
        return self._pointer_name

    def target(self) -> str | None:
        """The version this replica should serve: the pinned one, else the registry's active one."""
        return self.pinned if self.pinned is not None else self.pointer()

    async def catalog(self) -> Catalog:
        """Every registry version with the pool's view of it (a pointer naming no version = no active one);
        the metadata comes from a cache, rebuilt on a worker thread."""
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
        """The engine of `version` (loaded if needed, within the load budget when `limited`: a request's
        `version=`, not the admin's load), or the served one when None (never loads)."""
        if version is not None:
            name = self.registry.resolve(version)
            if limited and name not in self._engines and not self._load_budget.take():
                raise Overloaded(
                    f"version {name} is not loaded and requests may load at most "
                    f"{self._load_budget.per_minute:g} versions a minute; retry later, or ask an admin to "
                    "load it"
                )
            return await self.load(name)
        if self._serving is None:
            raise NotReady(redact(self._problem or NO_ACTIVE))
        return self._touch(self._serving)

    async def sync(self) -> str | None:
        """Load, warm and switch to the target version if it is not served yet; returns the served one.
        A bad target is logged and counted, never raised: the served version stays in service."""
        try:
            name = self.target()
        except RegistryError as exc:  # a pointer naming no version: keep serving, say why
            return self._trouble(str(exc))
        if name is None:
            return self._trouble(self._no_active(), logged=True)  # /readyz says it; the start-up logs it
        if name == self._serving:
            self._problem = None
            return name
        if name in self._failed:
            return self._serving
        started = time.perf_counter()
        try:
            await self.load(self.registry.resolve(name))
        except CheckpointError as exc:  # counted by load()
            self._failed[name] = str(exc)
            log.error("version %s cannot be loaded, still serving %s: %s", name, self._serving, exc)
            kind = "pinned" if self.pinned else "active"
            return self._trouble(f"the {kind} version {name} cannot be loaded: {exc}", logged=True)
        except RegistryError as exc:  # e.g. a pinned version not published yet: tried again next poll
            return self._trouble(str(exc))
        self._set_serving(name)
        log.info("switched to %s after %.2f s of loading", name, time.perf_counter() - started)
        return name

    async def load(self, name: str) -> Engine:
        """Load a resolved version (once, even when many callers ask at the same time)."""
        if name in self._engines:
            return self._touch(name)
        async with self._lock:
            if name in self._engines:
                return self._touch(name)
            try:
                with metrics.MODEL_LOAD_SECONDS.time():
                    engine = await asyncio.to_thread(self._load_sync, name)
            except ModelError:
                metrics.MODEL_LOAD_FAILURES.labels(name).inc()
                raise
            except Exception as exc:  # whatever a bad version does to the constructor or the warm-up
                metrics.MODEL_LOAD_FAILURES.labels(name).inc()
                log.error("loading version %s failed", name, exc_info=exc)
                raise CheckpointError(f"version {name} failed to load: {type(exc).__name__}: {exc}") from exc
            self._engines[name] = engine
            self._failed.pop(name, None)
            metrics.MODEL_LOADS.labels(name).inc()
            self._evict()
            self._publish_info()
            return engine

    async def promote(self, version: str) -> Engine:
        """Load `version`, then make it the registry's active version; in-flight requests finish.
        Promotions run one at a time, and each returns only when none is pending any more: promotions
        sent together all answer with the same final active version (`serving`), the one the pointer
        names."""
        if self.pinned is not None:
            raise InvalidInput(
                f"this replica is pinned to {self.pinned} (CVAE_MODEL_VERSION); roll out another version "
                "by changing that setting"
            )
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
        async with self._promotes_settled:  # answer with the final state of promotions sent together
            await self._promotes_settled.wait_for(lambda: self._promotes_pending == 0)
        return engine

    # -- internals -----------------------------------------------------------------------------
    def _load_sync(self, name: str) -> Engine:
        engine = Engine(name, self.registry.load(name, device="cpu"), self.device)
        engine.warm_up()
        log.info("loaded and warmed model version %s on %s", name, self.device)
        return engine

    def _no_active(self) -> str:
        """Why nothing is active: an empty registry, or versions none of which was promoted (then how to)."""
        names = self.registry.version_names()
        if not names:
            return NO_ACTIVE
        return (
            f"the registry has {len(names)} version(s), the newest {names[-1]}, but none is active; promote "
            "one: python -m model promote VERSION, or POST /admin/models/VERSION/promote"
        )

    def _trouble(self, reason: str, logged: bool = False) -> str | None:
        """Remember why the target is not served (logged once per new reason); returns the served one."""
        if reason != self._problem and not logged:
            log.warning("cannot serve the target version, still serving %s: %s", self._serving, reason)
        self._problem = reason
        return self._serving

    def _touch(self, name: str) -> Engine:
        self._engines.move_to_end(name)
        return self._engines[name]

    def _set_serving(self, name: str) -> None:
        self._problem = None
        if name != self._serving:
            log.info("now serving %s (was %s)", name, self._serving)
            self._serving = name
            self._publish_info()

    def _evict(self) -> None:
        keep = (self._serving, self._pointer_name, self.pinned)
        for name in list(self._engines):
            if len(self._engines) <= self.capacity:
                return
            if name not in keep:
                del self._engines[name]
                log.info("evicted model version %s (LRU, capacity %d)", name, self.capacity)

    def _publish_info(self) -> None:
        """Mirror the loaded set into `cvae_model_info` and the served one into `cvae_model_serving`
        (stale series drop to 0)."""
        device = str(self.device)
        for labels in list(metrics.MODEL_INFO._metrics):  # the label sets published so far
            metrics.MODEL_INFO.labels(*labels).set(0)
        for name in self._engines:
            metrics.MODEL_INFO.labels(name, device, str(name == self._serving).lower()).set(1)
        for labels in list(metrics.MODEL_SERVING._metrics):
            metrics.MODEL_SERVING.labels(*labels).set(0)
        if self._serving is not None:
            metrics.MODEL_SERVING.labels(self._serving).set(1)
