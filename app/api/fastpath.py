"""POST /generate served without FastAPI's per-request machinery, for the common request.

The common request (a JSON body, no query string: a PNG of the active version) is most of the traffic,
and FastAPI's routing, dependency solving, request objects and exception middlewares cost more CPU
than everything else it needs. `GenerateFastPath` answers it with the route's own parts: the same
request model (`GenerateRequest`), the same service call, the same headers and the same error mapping
(`app.errors`). Anything else (a query string, another content type, a body that does not validate)
goes to the FastAPI route unchanged, body included, so every error answer stays the route's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.responses import elapsed_ms, generate_for, generated_headers
from app.errors import domain_error_response
from app.schemas import GenerateRequest
from app.service import Service

PATH = "/generate"
_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8")
_PNG_TYPE = (b"content-type", b"image/png")


class _Endpoint:
    path = PATH


_ENDPOINT = _Endpoint()


class GenerateFastPath:
    """The common POST /generate, answered with the route's parts (see the module docstring)."""

    def __init__(self, service: Callable[[], Service]):
        self.service = service  # read per request: the lifespan builds the service after this object

    def handles(self, scope: Scope) -> bool:
        """Whether the request is the common one (checked before its body is read)."""
        if scope["method"] != "POST" or scope["path"] != PATH or scope["query_string"]:
            return False
        for key, value in scope["headers"]:
            if key == b"content-type":
                return value.lower() in _JSON_TYPES
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send, route_app: ASGIApp) -> None:
        body = await _read_body(receive)
        if body is None:  # refused by the body limits (already answered) or the client left
            return
        try:
            request = GenerateRequest.model_validate_json(body)
        except ValidationError:  # the route answers it (its 422 carries FastAPI's error locations)
            await route_app(scope, _replay(body, receive), send)
            return
        scope["route"] = _ENDPOINT  # metrics and the access log name the endpoint by the route's path
        started = time.perf_counter()
        try:
            result = await generate_for(self.service().inference, request, receive)
        except Exception as exc:
            response = domain_error_response(exc, PATH)
            if response is None:
                raise  # the middleware's last line of defence logs it and answers 500
            await response(scope, receive, send)
            return
        headers = [
            (k.lower().encode(), v.encode())
            for k, v in generated_headers(result, elapsed_ms(started)).items()
        ]
        headers += [_PNG_TYPE, (b"content-length", str(len(result.png)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": result.png})


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` once, then whatever the client sends (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
