"""Admin routes (mounted only when `admin_token` is set): load or promote a version, no request dropped."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminDep, ServiceDep
from app.schemas import AdminResponse, error_responses

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])
ADMIN_ERRORS = error_responses(401, 404, 422)


@router.post("/models/{version}/load", response_model=AdminResponse, responses=ADMIN_ERRORS)
async def load_model(version: str, service: ServiceDep) -> AdminResponse:
    """Load a version into the pool (it can then be asked for with `version=`)."""
    engine = await service.pool.get(version, limited=False)
    return _state(service, engine.version)


@router.post(
    "/models/{version}/promote",
    response_model=AdminResponse,
    responses={**ADMIN_ERRORS, **error_responses(409)},  # 409: this replica cannot write the registry
)
async def promote_model(version: str, service: ServiceDep) -> AdminResponse:
    """Load a version, then make it the active one; requests in flight finish on the old one."""
    engine = await service.pool.promote(version)
    return _state(service, engine.version)


def _state(service: ServiceDep, version: str) -> AdminResponse:
    return AdminResponse(model_version=version, active=service.pool.serving, loaded=service.pool.loaded())
