"""The model pool: active pointer or pinned version, LRU of loaded versions, swaps, broken versions."""

from __future__ import annotations

import asyncio
import shutil
import threading

import pytest
import torch

from app import metrics
from app.exceptions import InvalidInput, NotReady
from app.model_pool import ModelPool
from model.errors import CheckpointError, VersionNotFoundError
from model.registry import Registry
from tests.builders.models import make_random_registry


def pool_of(registry: Registry, capacity: int = 2, pinned: str | None = None) -> ModelPool:
    return ModelPool(registry, torch.device("cpu"), capacity, pinned=pinned)


def series(gauge) -> dict[tuple[str, ...], float]:  # noqa: ANN001
    return {k: v._value.get() for k, v in gauge._metrics.items()}


def test_sync_loads_the_active_version(random_registry: Registry) -> None:
    pool = pool_of(random_registry)
    metrics.MODEL_SERVING.labels("v0001").set(0)  # the gauge is process-wide: earlier tests may have set it
    with pytest.raises(NotReady, match="no active model version"):  # a request never triggers a load
        asyncio.run(pool.get(None))
    assert pool.loaded() == []
    engine = asyncio.run(_get_after_sync(pool))
    assert engine.version == "v0001" and pool.serving == "v0001" and pool.loaded() == ["v0001"]
    assert engine.latent_dim == 4 and engine.default_temperature == 0.5
    assert series(metrics.MODEL_SERVING)[("v0001",)] == 1


async def _get_after_sync(pool: ModelPool):  # noqa: ANN202
    await pool.sync()
    return await pool.get(None)


def test_an_explicit_version_is_loaded_next_to_the_active_one(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
        await pool.sync()
        active, other = await pool.get(None), await pool.get("v0002")
        assert (active.version, other.version) == ("v0001", "v0002")
        assert await pool.get("v0002") is other  # cached
        assert pool.serving == "v0001"

    asyncio.run(body())


def test_unknown_versions_are_not_found(random_registry: Registry) -> None:
    pool = pool_of(random_registry)
    for name in ("v0099", "latest", "../v0001"):
        with pytest.raises(VersionNotFoundError):
            asyncio.run(pool.get(name))


def test_lru_evicts_the_least_recently_used_but_never_the_active(tmp_path) -> None:  # noqa: ANN001
    registry = make_random_registry(tmp_path / "r", versions=3)
    pool = pool_of(registry, capacity=2)

    async def body() -> None:
        await pool.sync()
        await pool.get("v0002")
        await pool.get("v0003")  # over capacity: v0002 goes, v0001 is active and stays
        assert pool.loaded() == ["v0001", "v0003"]

    asyncio.run(body())


def test_a_promotion_elsewhere_is_picked_up_by_the_next_sync(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
        await pool.sync()
        assert (await pool.get(None)).version == "v0001"
        random_registry.promote("v0002")  # e.g. by the training job or another replica
        assert (await pool.get(None)).version == "v0001"  # requests do not load: the poll does
        assert await pool.sync() == "v0002"
        assert (await pool.get(None)).version == "v0002" and pool.serving == "v0002"
        assert series(metrics.MODEL_SERVING)[("v0001",)] == 0
        assert series(metrics.MODEL_SERVING)[("v0002",)] == 1

    asyncio.run(body())


def test_requests_are_answered_by_the_old_version_while_the_new_one_loads(
    random_registry: Registry,
    monkeypatch,  # noqa: ANN001
) -> None:
    pool = pool_of(random_registry)
    real = pool._load_sync
    loading = threading.Event()
    release = threading.Event()

    def slow_load(name: str):  # noqa: ANN202
        loading.set()
        release.wait(10)
        return real(name)

    async def body() -> None:
        await pool.sync()
        monkeypatch.setattr(pool, "_load_sync", slow_load)
        random_registry.promote("v0002")
        switch = asyncio.create_task(pool.sync())
        await asyncio.to_thread(loading.wait, 10)
        for _ in range(5):  # the load is under way: requests get the old engine at once
            assert (await asyncio.wait_for(pool.get(None), 0.5)).version == "v0001"
        release.set()
        assert await switch == "v0002" and (await pool.get(None)).version == "v0002"

    asyncio.run(body())


def test_a_pinned_pool_serves_its_version_whatever_the_pointer(random_registry: Registry) -> None:
    pool = pool_of(random_registry, pinned="v0002")

    async def body() -> None:
        assert await pool.sync() == "v0002"
        random_registry.promote("v0002")
        random_registry.promote("v0001")
        assert await pool.sync() == "v0002" and (await pool.get(None)).version == "v0002"
        with pytest.raises(InvalidInput, match="pinned to v0002"):
            await pool.promote("v0001")

    asyncio.run(body())


def test_a_pinned_version_not_published_yet_is_waited_for(random_registry: Registry) -> None:
    pool = pool_of(random_registry, pinned="v0003")

    async def body() -> None:
        assert await pool.sync() is None
        with pytest.raises(NotReady, match="v0003"):
            await pool.get(None)
        make_random_registry(random_registry.root, versions=1, seed=7)  # publishes v0003 (and promotes it)
        random_registry.promote("v0001")  # the pin, not the active version, decides what is served
        assert await pool.sync() == "v0003"

    asyncio.run(body())


def test_promote_loads_first_then_switches(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
        await pool.sync()
        old = await pool.get(None)
        new = await pool.promote("v0002")
        assert random_registry.active_version() == "v0002" and pool.serving == "v0002"
        assert (await pool.get(None)) is new and old.version == "v0001"  # the old engine still works
        info = series(metrics.MODEL_INFO)
        assert info[("v0002", "cpu", "true")] == 1 and info[("v0001", "cpu", "true")] == 0
        assert await pool.sync() == "v0002"  # the poll finds the pointer it wrote: nothing to do

    asyncio.run(body())


def test_concurrent_requests_load_a_version_once(random_registry: Registry, monkeypatch) -> None:  # noqa: ANN001
    pool = pool_of(random_registry)
    loads = []
    real = pool._load_sync
    monkeypatch.setattr(pool, "_load_sync", lambda name: loads.append(name) or real(name))

    async def body() -> None:
        engines = await asyncio.gather(*(pool.load("v0001") for _ in range(8)), pool.sync())
        assert len({id(e) for e in engines[:8]}) == 1

    asyncio.run(body())
    assert loads == ["v0001"]


def test_an_empty_registry_is_not_ready(tmp_path) -> None:  # noqa: ANN001
    pool = pool_of(Registry(tmp_path / "empty"))
    with pytest.raises(NotReady, match="no active model version"):
        asyncio.run(_get_after_sync(pool))


def _corrupt(registry: Registry, name: str) -> None:
    weights = registry.path(name) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def test_a_corrupt_active_version_at_startup_is_not_ready(random_registry: Registry) -> None:
    _corrupt(random_registry, "v0001")
    before = metrics.MODEL_LOAD_FAILURES.labels("v0001")._value.get()
    with pytest.raises(NotReady, match="v0001 cannot be loaded.*corrupt or truncated") as info:
        asyncio.run(_get_after_sync(pool_of(random_registry)))
    assert str(random_registry.root) not in str(info.value)  # no server paths
    assert metrics.MODEL_LOAD_FAILURES.labels("v0001")._value.get() == before + 1


def test_a_corrupt_new_active_version_leaves_the_old_one_in_service(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
        await pool.sync()
        _corrupt(random_registry, "v0002")
        random_registry.promote("v0002")
        before = metrics.MODEL_LOAD_FAILURES.labels("v0002")._value.get()
        for _ in range(3):  # tried once per pointer change, not once per poll
            assert await pool.sync() == "v0001"
        assert metrics.MODEL_LOAD_FAILURES.labels("v0002")._value.get() == before + 1
        assert (await pool.get(None)).version == "v0001"
        assert "v0002 cannot be loaded" in (pool.problem or "")
        with pytest.raises(CheckpointError):  # asked for by name, it is refused
            await pool.get("v0002")
        random_registry.promote("v0001")  # the operator points back at a good version
        assert await pool.sync() == "v0001" and pool.problem is None

    asyncio.run(body())


def test_a_deleted_version_is_refused_cleanly(random_registry: Registry) -> None:
    shutil.rmtree(random_registry.path("v0002"))
    with pytest.raises(VersionNotFoundError):
        asyncio.run(pool_of(random_registry).get("v0002"))


def test_a_pointer_naming_no_version_keeps_the_served_one(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
        await pool.sync()
        (random_registry.root / "active").write_text("v0042\n")
        assert await pool.sync() == "v0001" and (await pool.get(None)).version == "v0001"
        assert "v0042" in (pool.problem or "")

    asyncio.run(body())
