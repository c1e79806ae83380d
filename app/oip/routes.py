"""The /v2 endpoints of the Open Inference Protocol: health, metadata, readiness, inference, repository index.

Versions are the registry's versions (`v0003`); a path without one means the active version. Inference
goes through the same model pool, batcher, limits and metrics as the service's own endpoints; every
refusal is answered by `app.oip.errors.ProtocolRoute` in the protocol's `{"error": ...}` shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.deps import ServiceDep
from app.model_pool import Catalog
from app.oip import infer
from app.oip.errors import ProtocolRoute
from app.oip.models import MODELS, ModelSpec, TensorSpec
from app.oip.protocol import (
    ErrorBody,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RepositoryIndexRequest,
    RepositoryModel,
    ServerMetadata,
    TensorMetadata,
)
from app.service import Service

SERVER_NAME = "cvae-digits"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
PLATFORM = "pytorch"
READY = {"description": "Yes (an empty body)"}

router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=ProtocolRoute)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the error statuses a /v2 endpoint may answer."""
    return {status: {"model": ErrorBody, "description": "Refused"} for status in statuses}


def model_spec(name: str) -> ModelSpec:
    """The protocol model called `name`, else 404."""
    spec = MODELS.get(name)
    if spec is None:
        raise HTTPException(404, f"unknown model '{name}'; the models are {', '.join(MODELS)}")
    return spec


def _latent_dim(catalog: Catalog, version: str) -> int:
    """A resolved version's latent size from the pool's cached catalog (-1 when its metadata cannot be
    read, or when the version vanished since it was resolved)."""
    for entry in catalog.versions:
        if entry.name == version:
            return entry.info.latent_dim if entry.info is not None else -1
    return -1


def _tensors(specs: tuple[TensorSpec, ...], latent_dim: int) -> list[TensorMetadata]:
    return [
        TensorMetadata(name=t.name, datatype=t.datatype, shape=[-1, *t.row_dims(latent_dim)]) for t in specs
    ]


# -- server ----------------------------------------------------------------------------------------------
@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def get_server_metadata(request: Request) -> ServerMetadata:
    """The server's name, version and protocol extensions."""
    return ServerMetadata(name=SERVER_NAME, version=request.app.version, extensions=EXTENSIONS)


@router.get("/health/live", response_class=Response, responses={200: READY}, summary="Server live")
async def get_server_live() -> Response:
    """200 while the process serves HTTP."""
    return Response(status_code=200)


@router.get(
    "/health/ready", response_class=Response, responses={200: READY, **errors(503)}, summary="Server ready"
)
async def get_server_ready(service: ServiceDep) -> Response:
    """200 once the active version is loaded, else 503 with Retry-After (as /readyz)."""
    await service.pool.get(None)
    return Response(status_code=200)


# -- models ----------------------------------------------------------------------------------------------
async def model_metadata(service: Service, name: str, version: str | None) -> ModelMetadata:
    spec = model_spec(name)
    resolved = service.pool.registry.resolve(version)  # 404 unknown version, 503 no active one
    catalog = await service.pool.catalog()  # cached metadata, rebuilt off the event loop
    latent_dim = _latent_dim(catalog, resolved)
    return ModelMetadata(
        name=spec.name,
        versions=[entry.name for entry in catalog.versions],
        platform=PLATFORM,
        inputs=_tensors(spec.inputs, latent_dim),
        outputs=_tensors(spec.outputs, latent_dim),
    )


@router.get(
    "/models/{name}", response_model=ModelMetadata, responses=errors(404, 503), summary="Model metadata"
)
async def get_model_metadata(name: str, service: ServiceDep) -> ModelMetadata:
    """Inputs and outputs (name, datatype, shape; -1 = any size) of a model at the active version."""
    return await model_metadata(service, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=errors(404, 503),
    summary="Model metadata of a version",
)
async def get_model_version_metadata(name: str, version: str, service: ServiceDep) -> ModelMetadata:
    """Inputs and outputs of a model at a registry version."""
    return await model_metadata(service, name, version)


async def model_ready(service: Service, name: str, version: str | None) -> Response:
    model_spec(name)
    if version is None:
        await service.pool.get(None)  # as /readyz: loads the active version, 503 when it cannot
        return Response(status_code=200)
    resolved = service.pool.registry.resolve(version)
    if resolved not in service.pool.loaded():
        raise HTTPException(400, f"version {resolved} is not loaded; its first inference request loads it")
    return Response(status_code=200)


@router.get(
    "/models/{name}/ready",
    response_class=Response,
    responses={200: READY, **errors(404, 503)},
    summary="Model ready",
)
async def get_model_ready(name: str, service: ServiceDep) -> Response:
    """200 when the model's active version is loaded."""
    return await model_ready(service, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_class=Response,
    responses={200: READY, **errors(400, 404, 503)},
    summary="Model version ready",
)
async def get_model_version_ready(name: str, version: str, service: ServiceDep) -> Response:
    """200 when the version is loaded; 400 when it is not (yet)."""
    return await model_ready(service, name, version)


# -- inference -------------------------------------------------------------------------------------------
def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` references inlined (it goes into the OpenAPI document,
    where `#/$defs/...` cannot be resolved)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


# The route reads the body itself (binary data may follow the JSON), so the schema is declared here.
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": inline_schema(InferenceRequest)}},
    }
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or with binary outputs the JSON header followed by their bytes",
        "model": InferenceResponse,
        "content": {"application/octet-stream": {}},
        "headers": {"Inference-Header-Content-Length": {"schema": {"type": "string"}}},
    },
    **errors(400, 404, 408, 413, 422, 503),
}


async def run_inference(service: Service, name: str, version: str | None, request: Request) -> Response:
    spec = model_spec(name)
    limit = service.settings.max_body_bytes
    body = infer.decompress(await request.body(), request.headers.get("content-encoding"), limit)
    parsed, binary = infer.parse_request(body, request.headers.get(infer.HEADER_LENGTH))
    engine = await service.pool.get(version)
    inputs = infer.bind_inputs(spec, parsed, binary, engine.latent_dim)
    wanted = infer.wanted_outputs(spec, parsed)
    results = await spec.compute(service.inference, engine, inputs)
    encoded = infer.encode_response(spec, engine.version, parsed, results, wanted)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


@router.post(
    "/models/{name}/infer",
    response_class=Response,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_BODY,
    summary="Inference",
)
async def post_model_infer(name: str, request: Request, service: ServiceDep) -> Response:
    """Run a model at the active version on the request's input tensors."""
    return await run_inference(service, name, None, request)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_class=Response,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_BODY,
    summary="Inference on a version",
)
async def post_model_version_infer(
    name: str, version: str, request: Request, service: ServiceDep
) -> Response:
    """Run a model at a registry version on the request's input tensors."""
    return await run_inference(service, name, version, request)


# -- model repository (read-only) ------------------------------------------------------------------------
INDEX_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": inline_schema(RepositoryIndexRequest)}},
    }
}


@router.post(
    "/repository/index",
    response_model=list[RepositoryModel],
    responses=errors(400),
    openapi_extra=INDEX_BODY,
    summary="Model repository index",
)
async def post_repository_index(request: Request, service: ServiceDep) -> JSONResponse:
    """Every model at every registry version: READY when loaded, else UNAVAILABLE with the reason."""
    raw = await request.body()  # JSON whatever the Content-Type says, or nothing (as tritonclient sends)
    body = RepositoryIndexRequest.model_validate_json(raw) if raw.strip() else RepositoryIndexRequest()
    catalog = await service.pool.catalog()  # cached metadata, rebuilt off the event loop
    loaded = set(catalog.loaded)
    entries = []
    for info in catalog.versions:
        if info.name in loaded:
            state, reason = "READY", ""
        elif info.error:
            state, reason = "UNAVAILABLE", "the version cannot be read"
        else:
            state, reason = "UNAVAILABLE", "not loaded; its first inference request loads it"
        entries += [
            RepositoryModel(name=name, version=info.name, state=state, reason=reason) for name in MODELS
        ]
    if body.ready:
        entries = [entry for entry in entries if entry.state == "READY"]
    return JSONResponse([entry.model_dump() for entry in entries])


@router.post("/repository/models/{name}/load", responses=errors(400, 404), summary="Load a model (refused)")
async def post_repository_load(name: str) -> Response:
    """Always 400: the repository is read-only (versions are promoted with the admin API)."""
    model_spec(name)
    raise HTTPException(400, "the model repository is read-only; every registry version loads on demand")


@router.post(
    "/repository/models/{name}/unload", responses=errors(400, 404), summary="Unload a model (refused)"
)
async def post_repository_unload(name: str) -> Response:
    """Always 400: the repository is read-only (the model pool evicts unused versions itself)."""
    model_spec(name)
    raise HTTPException(400, "the model repository is read-only; the server evicts unused versions itself")
