"""GET /v1/models: the registry's versions; GET /v1/models/{version}/{artifact}: their images."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from app.api.deps import ServiceDep
from app.errors import redact
from app.schemas import ModelsResponse, ModelVersion, error_responses
from model.errors import RegistryError

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsResponse, summary="List model versions")
async def list_models(service: ServiceDep) -> ModelsResponse:
    """Every version with its metadata (metrics, config), which is active and which are loaded."""
    pool = service.pool
    try:
        active = pool.pointer()
    except RegistryError:  # a pointer naming no version is shown as no active version
        active = None
    loaded = pool.loaded()
    versions = [
        ModelVersion(
            name=info.name,
            active=info.name == active,
            loaded=info.name in loaded,
            latent_dim=info.info.latent_dim if info.info else None,
            default_temperature=info.info.default_temperature if info.info else None,
            metadata=info.metadata,
            error=redact(info.error) if info.error else None,
        )
        for info in pool.registry.versions()
    ]
    return ModelsResponse(
        active=active, serving=pool.serving, loaded=loaded, device=str(pool.device), versions=versions
    )


@router.get(
    "/{version}/{artifact}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404)},
    summary="A version's sample grid or training curves",
)
async def get_model_artifact(
    version: str, artifact: Literal["samples.png", "training.png"], service: ServiceDep
) -> FileResponse:
    """The PNG the training job saved next to the weights."""
    path = service.pool.registry.path(version) / artifact
    if not path.is_file():
        raise HTTPException(404, f"version {version} has no {artifact}")
    return FileResponse(path, media_type="image/png")
