"""POST /generate: handwriting of a number."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import FormatQuery, ServiceDep, VersionQuery
from app.api.responses import b64, generate_for, generated_headers, timing
from app.schemas import GenerateRequest, GenerateResponse, error_responses
from model.config import IMAGE_SIDE

router = APIRouter(tags=["inference"])

PNG_OR_JSON: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"PNG of {IMAGE_SIDE}*len(text)*scale x {IMAGE_SIDE}*samples*scale pixels, "
        "or JSON with format=json",
        # `model` puts the JSON schema in components (an inline model_json_schema() would carry `$defs`
        # whose `#/$defs/...` references cannot be resolved inside the OpenAPI document).
        "model": GenerateResponse,
        "content": {"image/png": {}},
        "headers": {
            h: {"schema": {"type": "string"}} for h in ("X-Model-Version", "X-Seed", "X-Inference-Ms")
        },
    }
}


@router.post(
    "/generate",
    response_class=Response,
    responses={**PNG_OR_JSON, **error_responses(400, 404, 408, 413, 422, 503)},
    summary="Write a number in handwriting",
)
async def generate_digits(
    body: GenerateRequest,
    service: ServiceDep,
    request: Request,
    version: VersionQuery = None,
    format: FormatQuery = "png",
) -> Response:
    """One row per sample; without `style`, each row is one writer (one z) drawn from `seed`.

    (Plain PNG requests are usually answered by `app.api.fastpath` with this same call and answer.)"""
    started = time.perf_counter()
    result = await generate_for(service.inference, body, request.receive, version)
    spent = timing(started, result.stats)
    headers = generated_headers(result, spent.inference_ms)
    if format == "png":
        return Response(result.png, media_type="image/png", headers=headers)
    height, width = (side * body.scale for side in result.image.shape)
    payload = GenerateResponse(
        model_version=result.version,
        seed=result.seed,
        temperature=result.temperature,
        width=width,
        height=height,
        image_png_base64=b64(result.png),
        metrics=spent,
    )
    return JSONResponse(payload.model_dump(), headers=headers)
