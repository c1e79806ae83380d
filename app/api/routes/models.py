"""GET /v1/models: the registry's versions; GET /v1/models/{version}/{artifact}: their images."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.deps import ServiceDep
from app.exceptions import redact
from app.schemas import ModelsResponse, ModelVersion, error_responses

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsResponse, summary="List model versions")
async def list_models(service: ServiceDep) -> ModelsResponse:
    """Every version with its metadata (metrics, config), which is active and which are loaded."""
    catalog = service.pool.catalog()
    versions = [
        ModelVersion(
            name=info.name,
            active=info.name == catalog.active,
            loaded=info.name in catalog.loaded,
            latent_dim=info.info.latent_dim if info.info else None,
            default_temperature=info.info.default_temperature if info.info else None,
            metadata=info.metadata,
            error=redact(info.error) if info.error else None,
        )
        for info in catalog.versions
    ]
    return ModelsResponse(
        active=catalog.active,
        serving=catalog.serving,
        loaded=catalog.loaded,
        device=catalog.device,
        versions=versions,
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
    return FileResponse(service.pool.artifact(version, artifact), media_type="image/png")
