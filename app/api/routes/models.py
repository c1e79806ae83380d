"""GET /v1/models: the registry's versions; GET /v1/models/{version}/{artifact}: their images."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse

from app.api.deps import ServiceDep
from app.catalog import summary
from app.exceptions import redact
from app.model_pool import Catalog
from app.schemas import ModelsResponse, ModelVersion, error_responses

router = APIRouter(prefix="/v1/models", tags=["models"])
MAX_PAGE = 200


@router.get("", response_model=ModelsResponse, response_class=Response, summary="List model versions")
async def list_models(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Versions in this page")] = 50,
    offset: Annotated[int, Query(ge=0, description="Versions skipped, oldest first")] = 0,
    full: Annotated[bool, Query(description="Include the per-epoch training history")] = False,
) -> Response:
    """A page of the versions (oldest first) with their metadata (metrics, config), which is active and
    which are loaded; `total` counts them all. The history of each training run only with `full`."""
    catalog = await service.pool.catalog()
    key = (catalog.active, catalog.serving, tuple(catalog.loaded), limit, offset, full)
    body = service.pool.catalog_cache.memo(key, lambda: _page(catalog, limit, offset, full))
    return Response(body, media_type="application/json")


def _page(catalog: Catalog, limit: int, offset: int, full: bool) -> bytes:
    """The JSON of one page of the listing (memoised by the caller while the registry is unchanged)."""
    versions = [
        ModelVersion(
            name=info.name,
            active=info.name == catalog.active,
            loaded=info.name in catalog.loaded,
            latent_dim=info.info.latent_dim if info.info else None,
            default_temperature=info.info.default_temperature if info.info else None,
            metadata=summary(info.metadata, full),
            error=redact(info.error) if info.error else None,
        )
        for info in catalog.versions[offset : offset + limit]
    ]
    listing = ModelsResponse(
        active=catalog.active,
        serving=catalog.serving,
        loaded=catalog.loaded,
        device=catalog.device,
        total=len(catalog.versions),
        versions=versions,
    )
    return listing.model_dump_json().encode()


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
