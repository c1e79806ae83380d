"""Pure-ASGI middleware: request context (id, metrics, access log) and the request body limit."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import error_response, http_error_for, unexpected_error_response
from app.exceptions import BodyTimeout, PayloadTooLarge
from app.logs import set_request_id

log = logging.getLogger("app.access")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# After refusing a body, read (and drop) at most this much more of it so the client sees the 413
# instead of a reset connection; a bigger or slower body is cut off.
_DRAIN_BYTES = 64 * 1024 * 1024
_DRAIN_SECONDS = 5.0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class InFlight:
    """How many requests this process is serving now (the batcher reads it to decide whether to wait)."""

    def __init__(self) -> None:
        self.count = 0


class RequestContextMiddleware:
    """X-Request-ID (echoed when valid, else generated), in-flight count, metrics and the access log."""

    def __init__(self, app: ASGIApp, in_flight: InFlight | None = None):
        self.app = app
        self.in_flight = in_flight or InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        set_request_id(request_id)
        status = 0  # 0 until the response starts
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        metrics.IN_FLIGHT.inc()
        self.in_flight.count += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # the last line of defence: log it, answer a generic 500
            response = unexpected_error_response(scope["method"], scope["path"], exc)
            if status == 0:
                await response(scope, receive, send_with_id)
        finally:
            self.in_flight.count -= 1
            metrics.IN_FLIGHT.dec()
            self._observe(scope, status or 500, time.perf_counter() - started)

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        metrics.REQUESTS.labels(endpoint, scope["method"], str(status)).inc()
        metrics.REQUEST_LATENCY.labels(endpoint).observe(seconds)
        log.info(
            "%s %s %d",
            scope["method"],
            scope["path"],
            status,
            extra={"status": status, "duration_ms": round(seconds * 1000, 3), "endpoint": endpoint},
        )


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: at once from Content-Length, else while counting the stream.
    408 when the body has not fully arrived `timeout_s` after the headers: a client trickling bytes
    (or sending none) would otherwise hold its connection and request slot for ever."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, self._too_large(), more_body=True)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received = 0
        refused = complete = responded = False

        async def counting_receive() -> Message:
            nonlocal received, refused, complete
            if refused or complete:  # after the body, receive only reports a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                if not responded:  # (an app may answer before reading the body; then just stop reading)
                    refused = True
                    error = BodyTimeout(f"the request body did not arrive within {self.timeout_s:g} s")
                    await self._refuse(scope, receive, send, error, more_body=False)
                return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    more = message.get("more_body", False)
                    await self._refuse(scope, receive, send, self._too_large(), more_body=more)
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if not refused:
                responded = True
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body larger than the {self.max_bytes} byte limit")

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: Exception, more_body: bool) -> None:
        """Answer `error` and close the connection (after draining what is left of a too-large body)."""
        if more_body:
            await _drain(receive)
        status, detail, headers = http_error_for(error) or (400, str(error), {})
        response = error_response(status, detail, {**headers, "Connection": "close"}, scope["path"])
        await response(scope, receive, send)


async def _drain(receive: Receive) -> None:
    """Read and discard what is left of a refused body, within a byte and time budget."""
    drained = 0
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            while drained < _DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return
