"""A raw HTTP/1.1 client over a socket, for what httpx will not do: trickle a body, stall, lie in headers."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    """A parsed answer, when it came, and whether the server then closed the connection."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from `connect` to the end of the body
    closed: bool


def connect(base_url: str, timeout_s: float = 30.0) -> socket.socket:
    """A TCP connection to the server of `base_url`."""
    url = urlsplit(base_url)
    return socket.create_connection((url.hostname, url.port), timeout=timeout_s)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    """The request line and headers, ready to send."""
    lines = [f"{method} {path} HTTP/1.1", "Host: reliability", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket, started: float, timeout_s: float = 30.0) -> RawResponse:
    """Read one answer (Content-Length framed), then wait briefly to see whether the server closes."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without an answer after {time.perf_counter() - started:.2f} s")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    seconds = time.perf_counter() - started
    sock.settimeout(2.0)
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        closed = False
    return RawResponse(int(status_line.split()[1]), headers, body, seconds, closed)


async def _one(host: str, port: int, request: bytes, go: asyncio.Event) -> tuple[RawResponse | None, float]:
    """Connect, wait for the starting signal, send `request`, read its answer (Content-Length framed)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await go.wait()
        started = time.perf_counter()
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None, time.perf_counter() - started
        status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        seconds = time.perf_counter() - started
        return RawResponse(int(status_line.split()[1]), headers, body, seconds, False), seconds
    finally:
        writer.close()


async def _burst(base_url: str, requests: list[bytes]) -> list[tuple[RawResponse | None, float]]:
    url = urlsplit(base_url)
    go = asyncio.Event()
    tasks = [asyncio.create_task(_one(url.hostname or "", url.port or 80, r, go)) for r in requests]
    await asyncio.sleep(0.5)  # every connection is open: the requests then leave together
    go.set()
    return await asyncio.gather(*tasks)


def burst(base_url: str, requests: list[bytes]) -> list[tuple[RawResponse | None, float]]:
    """Send every request at the same instant, each on its own connection: [(answer or None, seconds)]."""
    return asyncio.run(_burst(base_url, requests))
