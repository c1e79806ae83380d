"""THE place where errors become HTTP answers.

Domain errors come from `model/` (ModelError family), `app/imaging.py` (ImageError family) and the
service itself (`app/exceptions.py`). `http_error_for` maps each to (status, detail, headers); the
handlers registered by `install_error_handlers` and the body-limit middleware both use it. Anything
unknown is logged with its traceback and answered with a generic 500 that reveals no path or trace.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import imaging
from app.exceptions import (
    BodyTimeout,
    ClientGone,
    InferenceTimeout,
    InvalidInput,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    redact,
)
from app.logs import current_request_id, note_refusal
from model.errors import CheckpointError, ModelError, RegistryError, RegistryReadOnly, VersionNotFoundError

log = logging.getLogger("app.errors")

PROTOCOL_PREFIX = "/v2"  # the Open Inference Protocol's paths (app/oip), whose errors have its shape
RETRY_AFTER_OVERLOADED_S = 1
RETRY_AFTER_NOT_READY_S = 5
CLIENT_CLOSED_REQUEST = 499  # nginx's convention; the client is gone and never reads it, the logs do


_IMAGE_STATUS = {
    imaging.ImageTooLarge: 413,
    imaging.UnsupportedImage: 415,
    imaging.UnreadableImage: 422,
    imaging.BlankImage: 422,
}


def http_error_for(exc: Exception) -> tuple[int, str, dict[str, str]] | None:
    """(status, detail, headers) for a known domain error, None for anything else."""
    detail = redact(str(exc)) or type(exc).__name__
    if isinstance(exc, imaging.ImageError):
        status = next((s for cls, s in _IMAGE_STATUS.items() if isinstance(exc, cls)), 422)
        return status, detail, {}
    if isinstance(exc, VersionNotFoundError):
        return 404, detail, {}
    if isinstance(exc, CheckpointError):
        return 422, f"this model version cannot be loaded: {detail}", {}
    if isinstance(exc, RegistryReadOnly):  # this replica cannot promote; retrying here will not help
        return 409, detail, {}
    if isinstance(exc, (RegistryError, NotReady)):
        return 503, detail, {"Retry-After": str(RETRY_AFTER_NOT_READY_S)}
    if isinstance(exc, (Overloaded, InferenceTimeout)):
        return 503, detail, {"Retry-After": str(RETRY_AFTER_OVERLOADED_S)}
    if isinstance(exc, ClientGone):
        return CLIENT_CLOSED_REQUEST, detail, {}
    if isinstance(exc, PayloadTooLarge):
        return 413, detail, {}
    if isinstance(exc, BodyTimeout):
        return 408, detail, {}
    if isinstance(exc, (InvalidInput, ModelError)):
        return 422, detail, {}
    return None


def error_response(
    status: int, detail: Any, headers: dict[str, str] | None = None, path: str = ""
) -> JSONResponse:
    """The JSON error body every non-2xx answer uses: `{"detail": ..., "request_id": ...}`, or on the
    Open Inference Protocol's paths (/v2) its own `{"error": "..."}` (the request id is in the header)."""
    request_id = current_request_id()
    if path == PROTOCOL_PREFIX or path.startswith(PROTOCOL_PREFIX + "/"):
        body: dict[str, Any] = {"error": detail if isinstance(detail, str) else str(detail)}
    else:
        body = {"detail": detail, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers={**(headers or {}), "X-Request-ID": request_id})


def unexpected_error_response(method: str, path: str, exc: BaseException) -> JSONResponse:
    """Log an unknown error with its traceback; the client gets a generic 500 with the request id."""
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(500, "internal server error; quote the request id when reporting it", path=path)


def _safe(value: Any) -> Any:
    """A JSON-safe copy of a validation error's location/context value (NaN/Inf become strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def validation_issues(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's error list without the echoed `input` and `ctx`, which may not serialise."""
    return [
        {
            "loc": [_safe(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in errors
    ]


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, validation_issues(list(exc.errors())), path=request.url.path)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, exc.detail, dict(exc.headers or {}), request.url.path)


def domain_error_response(exc: Exception, path: str = "") -> JSONResponse | None:
    """The answer to a known domain error on `path`, None for anything else. The error and its detail
    go on the request's access line (one line a request), or on a line of their own outside a request."""
    mapped = http_error_for(exc)
    if mapped is None:
        return None
    status, detail, headers = mapped
    if not note_refusal(type(exc).__name__, detail):
        log.info("request refused", extra={"status": status, "error": type(exc).__name__, "detail": detail})
    return error_response(status, detail, headers, path)


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    response = domain_error_response(exc, request.url.path)
    return response if response is not None else await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response(request.method, request.url.path, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on the app."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    for cls in (imaging.ImageError, ModelError, ServiceError):
        app.add_exception_handler(cls, _on_domain_error)
    app.add_exception_handler(Exception, _on_unexpected)
