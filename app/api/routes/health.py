"""GET /healthz (liveness) and GET /readyz (a model is loaded and can serve, and we are not draining)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.exceptions import NotReady
from app.schemas import HealthResponse, ReadyResponse, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def get_health() -> HealthResponse:
    """200 while the process serves HTTP, model or not."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadyResponse, responses=error_responses(503), summary="Readiness")
async def get_ready(service: ServiceDep) -> ReadyResponse:
    """200 once a version is loaded and served, else 503 with Retry-After; 503 from SIGTERM on, so load
    balancers stop sending while in-flight work finishes."""
    if service.draining:
        raise NotReady("the server is shutting down; retry on another instance")
    engine = await service.pool.get(None)
    return ReadyResponse(status="ready", model_version=engine.version, device=str(engine.device))
