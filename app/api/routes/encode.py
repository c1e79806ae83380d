"""POST /encode and POST /reconstruct: an uploaded digit through the encoder (and back)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from app import imaging
from app.api.deps import FormatQuery, ServiceDep, VersionQuery
from app.api.responses import b64, timing, timing_headers
from app.exceptions import InvalidInput
from app.inference import Encoded
from app.limits import MAX_SCALE
from app.schemas import EncodeMetrics, EncodeResponse, ReconstructResponse, error_responses
from model.config import IMAGE_SIDE


async def refuse_repeated_fields(request: Request) -> None:
    """422 for a form field sent more than once: which copy counts would be the parser's choice, and a
    filter that looked at the first `file` part would let another one through."""
    counts = Counter(name for name, _ in (await request.form()).multi_items())  # parsed once, cached
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise InvalidInput(f"form fields sent more than once: {', '.join(repeated[:8])}")


router = APIRouter(tags=["inference"], dependencies=[Depends(refuse_repeated_fields)])

FileField = Annotated[UploadFile, File(description="PNG, JPEG, BMP, GIF (first frame), WebP or TIFF")]
LabelField = Annotated[int | None, Form(ge=0, le=9, description="The digit; omitted = inferred by the CVAE")]
UPLOAD_ERRORS = error_responses(400, 404, 408, 413, 415, 422, 503)


async def read_digit(file: UploadFile, service: ServiceDep) -> np.ndarray:
    """The upload as MNIST-style IMAGE_SIDE x IMAGE_SIDE pixels in [0, 1] (decoded on a worker thread)."""
    data = await file.read()
    limit = service.settings.max_image_pixels
    return await asyncio.to_thread(imaging.preprocess_upload, data, max_pixels=limit)


def encode_metrics(result: Encoded, started: float) -> EncodeMetrics:
    """ELBO terms plus timing, for both routes."""
    return EncodeMetrics(
        elbo=result.elbo,
        recon_bce=result.recon_bce,
        kl=result.kl,
        mse=result.mse,
        **timing(started, result.stats).model_dump(),
    )


@router.post("/encode", response_model=EncodeResponse, responses=UPLOAD_ERRORS, summary="Encode a digit")
async def encode_digit(
    file: FileField,
    service: ServiceDep,
    label: LabelField = None,
    version: VersionQuery = None,
    format: Annotated[Literal["json"], Query(description="json (the only format of /encode)")] = "json",
) -> JSONResponse:
    """Posterior (mu, log_var), label probabilities and ELBO terms of an uploaded digit."""
    started = time.perf_counter()
    pixels = await read_digit(file, service)
    result = await service.inference.encode(pixels, label, version)
    spent = encode_metrics(result, started)
    payload = EncodeResponse(
        model_version=result.version,
        label=result.label,
        label_source=result.label_source,
        label_probs=result.label_probs,
        latent_dim=len(result.mu),
        mu=result.mu,
        log_var=result.log_var,
        metrics=spent,
    )
    return JSONResponse(payload.model_dump(), headers=timing_headers(result.version, spent.inference_ms))


@router.post(
    "/reconstruct",
    response_class=Response,
    responses={
        200: {
            "description": "PNG of the reconstruction, or JSON with format=json",
            "model": ReconstructResponse,  # JSON schema by reference (see generate.py)
            "content": {"image/png": {}},
        },
        **UPLOAD_ERRORS,
    },
    summary="Reconstruct a digit",
)
async def reconstruct_digit(
    file: FileField,
    service: ServiceDep,
    label: LabelField = None,
    scale: Annotated[int, Form(ge=1, le=MAX_SCALE)] = 1,
    invert: Annotated[bool, Form()] = False,
    version: VersionQuery = None,
    format: FormatQuery = "png",
) -> Response:
    """The decoder mean at z = mu of an uploaded digit, with its ELBO terms in headers."""
    started = time.perf_counter()
    pixels = await read_digit(file, service)
    result = await service.inference.encode(pixels, label, version)
    png = imaging.to_png(result.reconstruction, scale=scale, invert=invert)  # at most 224 x 224
    spent = encode_metrics(result, started)
    headers = {
        **timing_headers(result.version, spent.inference_ms),
        "X-Label": str(result.label),
        "X-Label-Source": result.label_source,
        "X-ELBO": f"{result.elbo:.4f}",
        "X-Recon-BCE": f"{result.recon_bce:.4f}",
        "X-KL": f"{result.kl:.4f}",
        "X-MSE": f"{result.mse:.6f}",
    }
    if format == "png":
        return Response(png, media_type="image/png", headers=headers)
    payload = ReconstructResponse(
        model_version=result.version,
        label=result.label,
        label_source=result.label_source,
        label_probs=result.label_probs,
        width=IMAGE_SIDE * scale,
        height=IMAGE_SIDE * scale,
        image_png_base64=b64(png),
        input_png_base64=b64(imaging.to_png(pixels)),
        metrics=spent,
    )
    return JSONResponse(payload.model_dump(), headers=headers)
