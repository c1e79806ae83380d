"""Limits at the connection level, below the ASGI app: what uvicorn's httptools protocol does not bound.

`LimitedHttpToolsProtocol` is uvicorn's httptools protocol (the fast parser of `uvicorn[standard]`) with:

- a cap on the request head (`max_header_bytes`, request line included, and `max_headers`): the bytes of
  a head still arriving are counted as they come, so an endless header line or two million headers cost
  at most one read buffer more than the limit; answered **431** (JSON `detail`, `Connection: close`);
- a deadline for the request head (`header_timeout_s`), from the connection's opening or the first byte
  of a request until its last header: a client trickling its headers gets **408**, one that sends
  nothing is closed (after a response, uvicorn's own keep-alive timeout closes an idle connection);
- a cap on open connections per worker (`max_connections`): a request on a connection over the cap is
  answered **503** with `Retry-After` and the connection closed; an idle connection over the cap is
  closed after at most `OVER_CAP_GRACE_S`, so idle sockets cannot exhaust the file descriptors;
- a deadline for a blocked write (`send_timeout_s`): a client that stops reading its answers (say, 50
  pipelined requests never read) has its connection aborted, which frees the answers it was holding;
- one socket write per answer: uvicorn writes the response head when the app starts its answer and the
  body when it sends it; `_OneWriteTransport` holds the head until the first body write and sends both
  together (on loopback a send costs about as much as all the Python work of a small request).

Each refusal is counted in `cvae_connections_refused_total{reason}` and logged (at most one line a
second per reason, with the count since the last line). The per-request work of the protocol is a few
integer additions: the hot path keeps httptools' speed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from app import metrics
from app.errors import error_response, http_error_for
from app.exceptions import Overloaded

log = logging.getLogger("app.connections")

# The kernel's send buffer of a connection, fixed (no autotuning up to MBs): answers a client does not
# read pile up there, so this bounds what one such connection holds and how much work it can make us
# do before its writes block (then `send_timeout_s` applies). Our answers are small; 32 KiB (the kernel
# doubles it) still sends the biggest PNG in a few round trips.
SEND_BUFFER_BYTES = 32 * 1024
OVER_CAP_GRACE_S = 1.0  # how long a connection over the cap may stay open without sending a request


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one worker applies to each connection (from Settings)."""

    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    max_connections: int
    send_timeout_s: float


class _OneWriteTransport:
    """The transport as one request's cycle sees it: the response head (the cycle's first write after its
    answer started) is held and sent with the next write, the body's first part, in one socket write.

    Every body message makes uvicorn write (an empty part too), so a head is never held past its body;
    writes before the answer starts (`100 Continue`) go out at once. Bodies over `JOIN_BYTES` are not
    copied to join them: the head goes first, then the body."""

    JOIN_BYTES = 64 * 1024
    __slots__ = ("_cycle", "_transport", "_head", "_joined")

    def __init__(self, cycle: RequestResponseCycle, transport: asyncio.Transport):
        self._cycle = cycle
        self._transport = transport
        self._head: bytes | None = None
        self._joined = False  # the head has been written (joined or not): later writes pass through

    def write(self, data: bytes) -> None:
        if self._joined or not self._cycle.response_started:
            self._transport.write(data)
        elif self._head is None:
            self._head = data
        else:
            head, self._head, self._joined = self._head, None, True
            if len(data) <= self.JOIN_BYTES:
                self._transport.write(head + data)
            else:
                self._transport.write(head)
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head, self._joined = self._head, None, True
            self._transport.write(head)

    def __getattr__(self, name: str) -> Any:  # everything else: the real transport's
        return getattr(self._transport, name)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limits."""


class _ThrottledLog:
    """One log line a second per reason at most, saying how many refusals it stands for."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}

    def refused(self, reason: str, message: str, client: Any) -> None:
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        self._pending[reason] = self._pending.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last.get(reason, 0.0) >= 1.0:
            count = self._pending.pop(reason)
            self._last[reason] = now
            log.warning(
                "connection refused (%s): %s; %d such refusal(s) since the last line",
                reason,
                message,
                count,
                extra={"reason": reason, "client": _peer(client), "count": count},
            )


_REFUSALS = _ThrottledLog()


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def error_bytes(status: int, reason: str, detail: str, extra: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 error answer (the JSON error shape) that closes the connection."""
    body = json.dumps({"detail": detail, "request_id": "-"}).encode()
    headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "connection": "close",
        **(extra or {}),
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI answer to a request on a connection over the cap: the service's answer to Overloaded
    (app/errors.py: 503, Retry-After, the error shape of the path), then the connection is closed."""
    mapped = http_error_for(Overloaded("too many open connections; retry shortly"))
    assert mapped is not None  # Overloaded is a known domain error
    status, detail, headers = mapped
    answer = error_response(status, detail, {**headers, "Connection": "close"}, path=scope["path"])
    await answer(scope, receive, send)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads, head and write deadlines and a connection
    cap (see the module docstring). Built by uvicorn through `functools.partial(cls, limits=...)`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._in_head = True  # between the end of a request (or the connection's start) and its headers
        self._head_bytes = 0  # raw bytes received while in a head (request line + headers)
        self._header_bytes = 0  # bytes of the complete header lines of this head
        self._header_count = 0
        self._refusal: tuple[int, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._over_cap = False
        self._running: RequestResponseCycle | None = None  # the request whose answer is being written

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self._over_cap = len(self.connections) > self.limits.max_connections
        grace = OVER_CAP_GRACE_S if self._over_cap else self.limits.header_timeout_s
        self._head_timer = self.loop.call_later(min(grace, self.limits.header_timeout_s), self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        # uvicorn marks only the newest request of the connection as disconnected; with pipelining the one
        # running is older, and its next write would hit a closed transport (uvloop raises): mark it too.
        running = self._running
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()
        self.pipeline.clear()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        cycle.transport = _OneWriteTransport(cycle, self.transport)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)  # a parser error (ours included) ends in send_400_response
        if self._in_head and self._head_bytes > self.limits.max_header_bytes and self._refusal is None:
            self._refuse_head(f"the request head is larger than {self.limits.max_header_bytes} bytes")

    # -- parser callbacks ----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_bytes = self._header_count = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._refusal = (
                431,
                "Request Header Fields Too Large",
                f"more than {self.limits.max_headers} headers",
            )
            raise _HeadTooLarge
        if self._header_bytes > self.limits.max_header_bytes:
            detail = f"the request headers are larger than {self.limits.max_header_bytes} bytes"
            self._refusal = (431, "Request Header Fields Too Large", detail)
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if not self._over_cap:
            super().on_headers_complete()
            return
        _REFUSALS.refused("connections", f"more than {self.limits.max_connections} open", self.client)
        app, self.app = self.app, _over_capacity  # this one request is answered 503, then closed
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    # -- refusals ----------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, reason, detail = self._refusal
        _REFUSALS.refused("header_size", detail, self.client)
        self._close_with(error_bytes(status, reason, detail))

    def _refuse_head(self, detail: str) -> None:
        self._refusal = (431, "Request Header Fields Too Large", detail)
        _REFUSALS.refused("header_size", detail, self.client)
        self._close_with(error_bytes(431, "Request Header Fields Too Large", detail))

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0:  # nothing sent: closed without an answer, as nginx does
            _REFUSALS.refused("idle", "no request within the header timeout", self.client)
            self.transport.close()
            return
        detail = f"the request headers did not arrive within {self.limits.header_timeout_s:g} s"
        self._refusal = (408, "Request Timeout", detail)
        _REFUSALS.refused("header_timeout", detail, self.client)
        self._close_with(error_bytes(408, "Request Timeout", detail))

    def _close_with(self, answer: bytes) -> None:
        self._cancel_timers()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    # -- writes --------------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout_s, self._send_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timeout(self) -> None:
        self._send_timer = None
        detail = f"the client read nothing of its answers for {self.limits.send_timeout_s:g} s"
        _REFUSALS.refused("send_timeout", detail, self.client)
        self.transport.abort()  # close() would wait for a flush that never comes

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._send_timer = None
