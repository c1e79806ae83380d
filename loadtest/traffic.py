"""Steady, bounded background traffic with every answer recorded: the load of the cluster smoke test.

`Traffic(url, clients)` runs `clients` asyncio clients on a thread of its own, each sending the load
test's mix (loadtest/mix.py: /generate of random numbers, /encode and /reconstruct of real digits) back to
back with a short think time, over keep-alive connections. Every request is recorded with the phase that
was current when it started, its status (None when no HTTP answer came) and the version that answered.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass

import httpx

from loadtest.mix import digit_uploads, generate_body

ENDPOINTS = ("/generate", "/encode", "/reconstruct")
WEIGHTS = (0.7, 0.15, 0.15)  # the load test's mix (loadtest/locustfile.py)


@dataclass(frozen=True)
class Outcome:
    """One request: when, which phase, what came back."""

    phase: str
    endpoint: str
    started: float  # time.monotonic()
    finished: float
    status: int | None
    version: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


class Traffic:
    """Background clients until `stop()`; `phase` names the phase new requests belong to."""

    def __init__(self, url: str, clients: int = 6, think_s: float = 0.02, seed: int = 0):
        self.url = url
        self.clients = clients
        self.think_s = think_s
        self.seed = seed
        self.phase = "warm-up"
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="traffic", daemon=True)
        self._uploads = digit_uploads()

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def in_phase(self, phase: str) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.phase == phase]

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        while not self._stop.is_set():
            endpoint = rng.choices(ENDPOINTS, WEIGHTS)[0]
            phase, started = self.phase, time.monotonic()
            status, version, error = None, "", ""
            try:
                response = await self._send(client, endpoint, rng)
                status, version = response.status_code, response.headers.get("x-model-version", "")
                if status != 200:
                    error = response.text[:200]
            except httpx.HTTPError as exc:
                error = repr(exc)
            self.outcomes.append(Outcome(phase, endpoint, started, time.monotonic(), status, version, error))
            await asyncio.sleep(rng.uniform(0, 2 * self.think_s))

    async def _send(self, client: httpx.AsyncClient, endpoint: str, rng: random.Random) -> httpx.Response:
        if endpoint == "/generate":
            return await client.post(endpoint, json=generate_body(rng))
        png, label = rng.choice(self._uploads)
        data = {"label": str(label)} if endpoint == "/encode" and rng.random() < 0.5 else None
        return await client.post(endpoint, files={"file": ("digit.png", png, "image/png")}, data=data)
