"""Every /v2 refusal in the protocol's shape, `{"error": "..."}`, by the service's one error mapping.

(`app.errors.error_response` gives /v2 paths that shape, so the refusals made before a route runs, such as
the body limit's 413, have it too.)

`ProtocolRoute` is the route class of the /v2 router: whatever a /v2 endpoint raises is answered here,
so no route catches anything. Protocol errors (a wrong datatype, shape, name or row count, a body that is
not an inference request) are 400; the service's domain errors keep the status `app.errors` gives them
(404 unknown version, 503 not ready or overloaded with Retry-After, ...); anything unknown is logged with
its traceback and answered with a generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import error_response, http_error_for, unexpected_error_response
from app.exceptions import redact
from app.oip.tensors import ProtocolError

log = logging.getLogger("app.oip")


def describe(errors: list[Any]) -> str:
    """Pydantic's error list as one line: `inputs.0.shape: Input should be a valid list; ...`."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        parts.append(f"{where}: {err.get('msg', '')}" if where else str(err.get("msg", "")))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return redact("; ".join(parts) + more)


def protocol_status(exc: Exception) -> tuple[int, str, dict[str, str]] | None:
    """(status, message, headers) of a known error, None for anything else."""
    if isinstance(exc, ProtocolError):
        return 400, redact(str(exc)), {}
    if isinstance(exc, (RequestValidationError, pydantic.ValidationError)):
        return 400, describe(list(exc.errors())), {}
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, str(exc.detail), dict(exc.headers or {})
    return http_error_for(exc)


def answer(request: Request, exc: Exception) -> Response:
    """The protocol's answer to an exception raised by a /v2 endpoint."""
    mapped = protocol_status(exc)
    if mapped is None:
        return unexpected_error_response(request.method, request.url.path, exc)
    status, message, headers = mapped
    log.info("request refused", extra={"status": status, "error": type(exc).__name__, "detail": message})
    return error_response(status, message, headers, request.url.path)


class ProtocolRoute(APIRoute):
    """An APIRoute whose errors are answered in the protocol's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # the one place /v2 errors become answers
                return answer(request, exc)

        return guarded
