"""The app factory: optional CORS, admin routes only with a token, the demo page when installed; the
service's start."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import httpx
import pytest

from app.api.routes import web
from app.main import create_app
from app.service import Service
from app.settings import Settings
from model.registry import Registry


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
