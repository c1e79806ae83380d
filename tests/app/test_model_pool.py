"""The model pool: active pointer, LRU of loaded versions, swaps, and broken versions."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import torch

from app import metrics
from app.exceptions import NotReady
from app.model_pool import ModelPool
from model.errors import CheckpointError, VersionNotFoundError
from model.registry import Registry
from tests.builders.models import make_random_registry


def pool_of(registry: Registry, capacity: int = 2) -> ModelPool:
    return ModelPool(registry, torch.device("cpu"), capacity)


def test_the_active_version_is_loaded_on_demand(random_registry: Registry) -> None:
    pool = pool_of(random_registry)
    engine = asyncio.run(pool.get(None))
    assert engine.version == "v0001" and pool.serving == "v0001" and pool.loaded() == ["v0001"]
    assert engine.latent_dim == 4 and engine.default_temperature == 0.5


def test_an_explicit_version_is_loaded_next_to_the_active_one(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
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
        await pool.get(None)
        await pool.get("v0002")
        await pool.get("v0003")  # over capacity: v0002 goes, v0001 is active and stays
        assert pool.loaded() == ["v0001", "v0003"]

    asyncio.run(body())


def test_a_promotion_elsewhere_is_picked_up(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
        assert (await pool.get(None)).version == "v0001"
        random_registry.promote("v0002")  # e.g. by the training CLI or another worker
        assert (await pool.get(None)).version == "v0002"
        assert pool.serving == "v0002"

    asyncio.run(body())


def test_promote_loads_first_then_switches(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
        old = await pool.get(None)
        new = await pool.promote("v0002")
        assert random_registry.active_version() == "v0002" and pool.serving == "v0002"
        assert (await pool.get(None)) is new and old.version == "v0001"  # the old engine still works
        series = {k: v._value.get() for k, v in metrics.MODEL_INFO._metrics.items()}
        assert series[("v0002", "cpu", "true")] == 1 and series[("v0001", "cpu", "true")] == 0

    asyncio.run(body())


def test_concurrent_requests_load_a_version_once(random_registry: Registry, monkeypatch) -> None:  # noqa: ANN001
    pool = pool_of(random_registry)
    loads = []
    real = pool._load_sync
    monkeypatch.setattr(pool, "_load_sync", lambda name: loads.append(name) or real(name))

    async def body() -> None:
        engines = await asyncio.gather(*(pool.get(None) for _ in range(8)))
        assert len({id(e) for e in engines}) == 1

    asyncio.run(body())
    assert loads == ["v0001"]


def test_an_empty_registry_is_not_ready(tmp_path) -> None:  # noqa: ANN001
    pool = pool_of(Registry(tmp_path / "empty"))
    with pytest.raises(NotReady, match="no active model version"):
        asyncio.run(pool.get(None))


def _corrupt(registry: Registry, name: str) -> None:
    weights = registry.path(name) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def test_a_corrupt_active_version_at_startup_is_not_ready(random_registry: Registry) -> None:
    _corrupt(random_registry, "v0001")
    with pytest.raises(NotReady, match="v0001 cannot be loaded.*corrupt or truncated") as info:
        asyncio.run(pool_of(random_registry).get(None))
    assert str(random_registry.root) not in str(info.value)  # no server paths


def test_a_corrupt_new_active_version_leaves_the_old_one_in_service(random_registry: Registry) -> None:
    pool = pool_of(random_registry)

    async def body() -> None:
        await pool.get(None)
        _corrupt(random_registry, "v0002")
        random_registry.promote("v0002")
        assert (await pool.get(None)).version == "v0001"
        with pytest.raises(CheckpointError):  # asked for by name, it is refused
            await pool.get("v0002")

    asyncio.run(body())


def test_a_deleted_version_is_refused_cleanly(random_registry: Registry) -> None:
    shutil.rmtree(random_registry.path("v0002"))
    with pytest.raises(VersionNotFoundError):
        asyncio.run(pool_of(random_registry).get("v0002"))
