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


async def _sequence(host: str, port: int, request: bytes, count: int, sink: list) -> None:
    """One keep-alive connection sending `count` requests one after another; records status,
    Retry-After (None when absent) and seconds of each."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, v in (ln.split(b":", 1) for ln in lines[1:] if b":" in ln)
            }
            await reader.readexactly(int(headers.get(b"content-length", b"0")))
            retry = headers.get(b"retry-after")
            sink.append(
                (int(lines[0][9:12]), retry.decode() if retry else None, time.perf_counter() - started)
            )
            if headers.get(b"connection", b"").lower() == b"close":
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def burst(
    host: str, port: int, request: bytes, clients: int, total: int
) -> list[tuple[int, str | None, float]]:
    """`total` requests from `clients` connections (each sends its share in sequence, like `hey -n -c`):
    [(status, Retry-After, seconds)]."""
    sink: list[tuple[int, str | None, float]] = []
    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    await asyncio.gather(*(_sequence(host, port, request, n, sink) for n in shares if n))
    return sink
