"""The one pure-ASGI middleware in front of the routes: request context (id, in-flight count, metrics,
access log), the request body limits (size and arrival time) and the dispatch of the common
POST /generate to its fast path (app/api/fastpath.py).

One layer instead of one per concern: every layer is a coroutine call and closures per request, and
this is the hot path of every endpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import error_response, http_error_for, unexpected_error_response
from app.exceptions import BodyTimeout, PayloadTooLarge
from app.logs import AccessLog, collect_refusal, set_request_id

log = logging.getLogger("app.access")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_REQUEST_ID = b"x-request-id"
# After refusing a body, read (and drop) at most this much more of it so the client sees the 413
# instead of a reset connection; a bigger or slower body is cut off.
_DRAIN_BYTES = 64 * 1024 * 1024
_DRAIN_SECONDS = 5.0


class FastPath(Protocol):
    """A request served without the app's routing (app/api/fastpath.py), handing anything else to it."""

    def handles(self, scope: Scope) -> bool: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send, route_app: ASGIApp) -> None: ...


class InFlight:
    """How many requests this process is serving now (the batcher reads it to decide whether to wait;
    the `cvae_requests_in_flight` gauge is sampled from it)."""

    def __init__(self) -> None:
        self.count = 0


class RequestIds:
    """32-hex-digit request ids, unique across processes and restarts without a random draw per request:
    a random per-process prefix (16 digits) and a counter (16 digits)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class _Observed:
    """Labelled metric children, made once per (endpoint, method, status) instead of per request."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = metrics.REQUESTS.labels(endpoint, method, str(status))
        latency = self._latency.get(endpoint)
        if latency is None:
            latency = self._latency[endpoint] = metrics.REQUEST_LATENCY.labels(endpoint)
        counter.inc()
        latency.observe(seconds)


class RequestMiddleware:
    """X-Request-ID (echoed when valid, else generated), in-flight count, metrics, the access log, and
    the body limits: 413 for bodies over `max_bytes` (at once from Content-Length, else while counting
    the stream); 408 when the body has not fully arrived `timeout_s` after the headers (a client
    trickling bytes, or sending none, would otherwise hold its connection and request slot for ever)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float = 30.0,
        in_flight: InFlight | None = None,
        fast_path: FastPath | None = None,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.in_flight = in_flight or InFlight()
        self.fast_path = fast_path
        self._ids = RequestIds()
        self._observed = _Observed()
        self._access = AccessLog(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = declared = None
        for key, value in scope["headers"]:
            if key == _REQUEST_ID:
                given = value.decode("latin-1")
            elif key == b"content-length":
                declared = value
        request_id = given if given and _VALID_REQUEST_ID.match(given) else self._ids.next()
        id_header = (_REQUEST_ID, request_id.encode())
        set_request_id(request_id)
        refusal = collect_refusal()
        status = 0  # 0 until the response starts
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                if any(k == _REQUEST_ID for k, _ in headers):
                    headers = [(k, v) for k, v in headers if k != _REQUEST_ID]
                message["headers"] = [*headers, id_header]
            await send(message)

        self.in_flight.count += 1  # (the in-flight gauge is sampled from it: app/service.py)
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send_with_id, self._too_large(), more_body=True)
            else:
                await self._limited(scope, receive, send_with_id)
        except Exception as exc:  # the last line of defence: log it, answer a generic 500
            if status == 0:  # (else the app's own error handler has logged it and answered)
                response = unexpected_error_response(scope["method"], scope["path"], exc)
                await response(scope, receive, send_with_id)
        finally:
            self.in_flight.count -= 1
            self._log(scope, status or 500, time.perf_counter() - started, refusal)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, reading its body under the size and time limits.

        The time limit is one timer per request, cancelled once the body is in (at the first receive for
        nearly every request), rather than a timeout context around each receive: when it fires during a
        receive it cancels the request's task, and that receive answers 408 instead."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        received = 0
        refused = complete = responded = receiving = late = False

        def cut_off() -> None:
            nonlocal late
            late = True
            if receiving and task is not None:
                task.cancel()

        timer = loop.call_later(self.timeout_s, cut_off)

        async def counting_receive() -> Message:
            nonlocal received, refused, complete, receiving
            if refused or complete:  # after the body, receive only reports a disconnect: no deadline
                return await receive()
            if not late:
                receiving = True
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if not late or task is None or task.uncancel() > 0:
                        raise  # cancelled by someone else (shutdown), not by the body's timer
                finally:
                    receiving = False
            if late:
                if not responded:  # (an app may answer before reading the body; then just stop reading)
                    refused = True
                    error = BodyTimeout(f"the request body did not arrive within {self.timeout_s:g} s")
                    await self._refuse(scope, receive, send, error, more_body=False)
                return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                if complete:
                    timer.cancel()
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

        try:
            if self.fast_path is not None and self.fast_path.handles(scope):
                await self.fast_path(scope, counting_receive, guarded_send, self.app)
            else:
                await self.app(scope, counting_receive, guarded_send)
        finally:
            timer.cancel()

    def _log(self, scope: Scope, status: int, seconds: float, refusal: list[tuple[str, str]]) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        self._observed.observe(endpoint, scope["method"], status, seconds)
        self._access.write(scope["method"], scope["path"], status, seconds, endpoint, refusal)

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
