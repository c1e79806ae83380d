"""Mixed background load for the fault tests: client threads cycling /generate, /encode, /reconstruct.

Every request carries its own X-Request-ID, so what a client saw can be matched with the server's access
log; every answer is checked (a PNG of the right size, a valid encoding) and recorded as an `Outcome`.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

import httpx
from PIL import Image

from tests.builders.corpus import digit
from tests.builders.images import encode

ENDPOINTS = ("/generate", "/encode", "/reconstruct")
DIGIT = encode(digit(), "PNG")


@dataclass(frozen=True)
class Outcome:
    """One request of the load: its answer (None: no HTTP answer at all) and whether the answer was right."""

    endpoint: str
    request_id: str
    status: int | None
    version: str
    valid: bool
    started: float
    finished: float
    error: str = ""


def _send(client: httpx.Client, endpoint: str, request_id: str, seed: int) -> httpx.Response:
    headers = {"X-Request-ID": request_id}
    if endpoint == "/generate":
        return client.post(endpoint, json={"text": "42", "seed": seed}, headers=headers)
    return client.post(endpoint, files={"file": ("d.png", DIGIT, "image/png")}, headers=headers)


def _valid(endpoint: str, response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    if endpoint == "/encode":
        probs = response.json()["label_probs"]
        return len(probs) == 10 and abs(sum(probs) - 1) < 1e-4
    image = Image.open(io.BytesIO(response.content))
    return image.size == ((56, 28) if endpoint == "/generate" else (28, 28))


class MixedLoad:
    """`clients` threads sending requests back to back until `stop()`; outcomes in `self.outcomes`."""

    def __init__(self, base_url: str, clients: int = 6, tag: str = "load"):
        self.base_url = base_url
        self.tag = tag
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> MixedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self, number: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            sent = 0
            while not self._stop.is_set():
                endpoint = ENDPOINTS[(number + sent) % len(ENDPOINTS)]
                request_id = f"{self.tag}-{number}-{sent}"
                started = time.perf_counter()
                try:
                    response = _send(client, endpoint, request_id, sent)
                except httpx.TransportError as exc:
                    finished = time.perf_counter()
                    outcome = Outcome(endpoint, request_id, None, "", False, started, finished, repr(exc))
                    time.sleep(0.05)  # the server is going away: do not spin
                else:
                    outcome = Outcome(
                        endpoint,
                        request_id,
                        response.status_code,
                        response.headers.get("x-model-version", ""),
                        _valid(endpoint, response),
                        started,
                        time.perf_counter(),
                        "" if response.status_code == 200 else response.text[:300],
                    )
                self.outcomes.append(outcome)
                sent += 1
