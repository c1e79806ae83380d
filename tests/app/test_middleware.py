"""The request middleware's body deadline, driven as ASGI (no sockets): one timer per request."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.middleware import RequestMiddleware

TIMEOUT_S = 0.2


def scope() -> Scope:
    return {"type": "http", "method": "POST", "path": "/upload", "query_string": b"", "headers": []}


def body_parts(*parts: tuple[float, bytes]) -> Receive:
    """A receive giving each (delay, bytes) part in turn, the last without more_body, then nothing."""
    queue = list(parts)

    async def receive() -> Message:
        if not queue:
            await asyncio.sleep(3600)  # the client sends nothing more
        delay, data = queue.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": data, "more_body": bool(queue)}

    return receive


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, works a while, answers 200 with the body's length."""
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message["body"])
        if not message.get("more_body"):
            break
    await asyncio.sleep(TIMEOUT_S * 1.5)  # longer than the body deadline: it no longer applies
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def call(receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await RequestMiddleware(echo_app, max_bytes=1024, timeout_s=TIMEOUT_S)(scope(), receive, send)
    return sent


def test_a_body_in_time_is_answered_even_when_the_app_works_past_the_deadline() -> None:
    sent = asyncio.run(call(body_parts((0, b"ab"), (TIMEOUT_S / 4, b"cd"))))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"4"


def test_a_body_that_stops_arriving_gets_408_and_the_app_s_answer_is_dropped() -> None:
    started = asyncio.run(asyncio.wait_for(call(body_parts((0, b"ab"), (3600, b"cd"))), 5))
    assert [m["type"] for m in started] == ["http.response.start", "http.response.body"]
    assert started[0]["status"] == 408
    assert (b"connection", b"close") in started[0]["headers"]
    assert "did not arrive within 0.2 s" in json.loads(started[1]["body"])["detail"]


def test_a_body_late_between_reads_gets_408_at_its_next_read() -> None:
    async def slow_reader(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the first part, in time
        await asyncio.sleep(TIMEOUT_S * 1.5)  # not reading while the deadline passes
        assert (await receive())["type"] == "http.disconnect"

    async def run() -> list[Message]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        middleware = RequestMiddleware(slow_reader, max_bytes=1024, timeout_s=TIMEOUT_S)
        await middleware(scope(), body_parts((0, b"ab"), (0, b"cd")), send)
        return sent

    assert asyncio.run(run())[0]["status"] == 408


def test_a_cancel_from_elsewhere_while_reading_is_not_taken_for_a_late_body() -> None:
    async def run() -> None:
        task = asyncio.ensure_future(call(body_parts((3600, b"ab"))))
        await asyncio.sleep(TIMEOUT_S / 4)
        task.cancel()  # e.g. the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
