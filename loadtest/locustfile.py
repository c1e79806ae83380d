"""Locust users for the CVAE service: the traffic mix of the load test.

About 70% of requests write a number (`/generate` with varied texts, sample counts and seeds), 15% encode
and 15% reconstruct real MNIST digits (the bundled training digits, uploaded as PNG files). Each request
is named by its path, so Locust's per-endpoint figures line up with the service's `endpoint` label.

Run by `python -m loadtest`, by the compose `loadtest` service, or by hand:
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from locust import HttpUser, between, task

try:
    from loadtest.mix import digit_uploads, generate_body
except ModuleNotFoundError:  # run as `locust -f loadtest/locustfile.py` from outside the repository
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from loadtest.mix import digit_uploads, generate_body

DIGIT_POOL = int(os.environ.get("LOADTEST_DIGIT_POOL", "256"))
WAIT_MAX_S = float(os.environ.get("LOADTEST_WAIT_MAX_S", "0.1"))


class DigitsUser(HttpUser):
    """One client of the service, with the realistic mix of requests."""

    wait_time = between(0.0, WAIT_MAX_S)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.digits = digit_uploads(DIGIT_POOL)

    def _expect(self, response, content_type: str) -> None:  # response: locust's ResponseContextManager
        with response as answer:
            got = answer.headers.get("content-type", "")
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}: {answer.text[:200]}")
            elif not got.startswith(content_type):
                answer.failure(f"content-type {got!r}, expected {content_type}")

    @task(70)
    def generate(self) -> None:
        body = generate_body(self.rng)
        self._expect(
            self.client.post("/generate", json=body, name="/generate", catch_response=True), "image/png"
        )

    @task(15)
    def encode(self) -> None:
        png, label = self.rng.choice(self.digits)
        form = {"label": str(label)} if self.rng.random() < 0.5 else {}
        files = {"file": ("digit.png", png, "image/png")}
        self._expect(
            self.client.post("/encode", files=files, data=form, name="/encode", catch_response=True),
            "application/json",
        )

    @task(15)
    def reconstruct(self) -> None:
        png, _ = self.rng.choice(self.digits)
        files = {"file": ("digit.png", png, "image/png")}
        self._expect(
            self.client.post("/reconstruct", files=files, name="/reconstruct", catch_response=True),
            "image/png",
        )
