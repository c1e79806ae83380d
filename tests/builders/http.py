"""Talking to a running server from the tests: many /generate requests at once.

Servers themselves are started with loadtest.server.start_server (the one helper of the tests, the
benchmarks and the load test).
"""

from __future__ import annotations

import asyncio

import httpx


def generate_concurrently(base_url: str, bodies: list[dict]) -> list[httpx.Response]:
    """POST every body to /generate at once, one connection each; the answers in order."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(client.post("/generate", json=body) for body in bodies))

    return asyncio.run(run())
