"""A low-overhead HTTP/1.1 load generator (asyncio streams, keep-alive, one request per connection at
a time): it spends a few tens of microseconds per request where httpx spends about a millisecond, so
on a small machine the servers, not the client, set the pace."""

from __future__ import annotations

import asyncio
import json
import time


def post_request(path: str, body: dict) -> bytes:
    """The bytes of a keep-alive JSON POST."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _connection(host: str, port: int, request: bytes, deadline: float, sink: list) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
            await reader.readexactly(int(headers[b"content-length"]))
            server_ms = float(headers.get(b"x-inference-ms", b"nan"))
            sink.append((status, (time.perf_counter() - started) * 1000, server_ms))
    finally:
        writer.close()


async def hammer(host: str, port: int, request: bytes, clients: int, seconds: float) -> tuple[list, float]:
    """`clients` connections sending back to back for `seconds`: [(status, client_ms, server_ms)], elapsed."""
    sink: list[tuple[int, float, float]] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_connection(host, port, request, deadline, sink) for _ in range(clients)))
    return sink, time.perf_counter() - started
