"""The routers, assembled by `api_router`."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import admin, encode, generate, health, metrics, models, web
from app.oip.routes import router as oip_router
from app.settings import Settings


def api_router(settings: Settings) -> APIRouter:
    """Every route; the admin routes only when an admin token is configured."""
    router = APIRouter()
    for module in (generate, encode, health, models, metrics, web):
        router.include_router(module.router)
    router.include_router(oip_router)  # the Open Inference Protocol (/v2)
    if settings.admin_token is not None:
        router.include_router(admin.router)
    return router
