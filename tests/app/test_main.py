"""The app factory: optional CORS, admin routes only with a token, the demo page when installed; the
service's start."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app import service as service_module
from app.api.routes import web
from app.batching import RATES
from app.main import create_app
from app.service import Service
from app.settings import Settings
from model.registry import Registry
from tests.builders.models import make_random_registry


def _request(settings: Settings, method: str, path: str, **kwargs: object) -> httpx.Response:
    async def body() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(settings))  # no lifespan: no model needed here
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(body())


PREFLIGHT = {"Origin": "http://demo.example", "Access-Control-Request-Method": "POST"}


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    response = _request(Settings(registry=tmp_path), "OPTIONS", "/generate", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_the_configured_origins(tmp_path: Path) -> None:
    settings = Settings(registry=tmp_path, cors_origins=["http://demo.example"])
    response = _request(settings, "OPTIONS", "/generate", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://demo.example"
    other = _request(settings, "OPTIONS", "/generate", headers={**PREFLIGHT, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_admin_routes_exist_only_with_a_token(tmp_path: Path) -> None:
    def admin_paths(settings: Settings) -> list[str]:
        spec = _request(settings, "GET", "/openapi.json").json()
        return [p for p in spec["paths"] if p.startswith("/admin")]

    assert admin_paths(Settings(registry=tmp_path)) == []
    assert admin_paths(Settings(registry=tmp_path, admin_token="t")) == [
        "/admin/models/{version}/load",
        "/admin/models/{version}/promote",
    ]


def test_without_the_demo_page_the_root_points_to_the_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "INDEX", tmp_path / "missing.html")
    response = _request(Settings(registry=tmp_path), "GET", "/")
    assert response.status_code == 404 and "/docs" in response.json()["detail"]


def test_startup_keeps_what_it_built_out_of_full_garbage_collections(random_registry: Registry) -> None:
    """Without gc.freeze() a full collection walked every imported module and the model (about 100 ms
    of stopped event loop here, at random moments of a burst); the service freezes them once started."""

    async def start_and_stop() -> int:
        service = Service.build(Settings(registry=random_registry.root, registry_poll_s=0))
        await service.start()
        try:
            return gc.get_freeze_count()
        finally:
            await service.stop()

    gc.unfreeze()
    try:
        frozen = asyncio.run(start_and_stop())
    finally:
        gc.unfreeze()  # (the test process goes on collecting as before)
    assert frozen > 10_000  # the imports and the model, not a handful of objects


async def _until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def test_a_server_started_on_an_empty_registry_measures_its_estimates_once_a_version_is_served(
    tmp_path: Path,
) -> None:
    """Before, the built-in guesses (a heavy request about 6x its real cost here) stayed until traffic
    corrected them."""

    async def body() -> None:
        service = Service.build(Settings(registry=tmp_path / "registry", registry_poll_s=0.2))
        await service.start()
        try:
            assert service.pool.serving is None and service.batcher.cost._seen == set()
            make_random_registry(tmp_path / "registry")
            assert await _until(lambda: service.batcher.cost._seen == set(RATES), 8)
            assert service.pool.serving == "v0001"
        finally:
            await service.stop()

    asyncio.run(body())


def test_estimates_measured_on_a_busy_start_are_measured_again_when_idle_until_requests_measure_them(
    random_registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.service")
    monkeypatch.setattr(service_module, "RECALIBRATE_FIRST_S", 0.5)
    monkeypatch.setattr(service_module, "IDLE_S", 0.2)

    async def body() -> None:
        service = Service.build(Settings(registry=random_registry.root, registry_poll_s=0))
        await service.start()
        cost = service.batcher.cost
        try:
            cost.row_s = 1.0  # as if start-up had measured a machine 10,000x slower
            assert await _until(lambda: cost.row_s < 0.01, 5)
            corrected = [r.getMessage() for r in caplog.records if "(were " in r.getMessage()][-1]
            assert "+ 1000000.00 +" in corrected  # the operator sees the slow estimate corrected
            cost.row_s, cost.followed = 1.0, {"row_s"}  # requests measured the pass: left to them
            await asyncio.sleep(2.5)
            assert cost.row_s == 1.0
        finally:
            await service.stop()

    asyncio.run(body())
