"""Requests the runner itself sends: one warm-up call per endpoint, and the served model version.

The warm-up makes every endpoint's metric series exist before the first scrape that opens the measured
window, so the window's histograms cover the whole run (and first-call costs are not measured).
"""

from __future__ import annotations

from typing import Any

import requests  # comes with Locust

from loadtest.mix import digit_uploads


def warm_up(target: str, timeout_s: float = 60.0) -> None:
    """One /generate, /encode and /reconstruct; raises if any does not answer 200."""
    png, label = digit_uploads()[0]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/generate", {"json": {"text": "0123456789", "samples": 2, "seed": 1}}),
        ("/encode", {"files": {"file": ("digit.png", png, "image/png")}, "data": {"label": str(label)}}),
        ("/reconstruct", {"files": {"file": ("digit.png", png, "image/png")}}),
    ]
    for path, kwargs in calls:
        response = requests.post(f"{target}{path}", timeout=timeout_s, **kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"warm-up {path} answered {response.status_code}: {response.text[:300]}")


def model_version(target: str) -> str | None:
    """The service's active model version: `active` of GET /v1/models (app/schemas.py
    ModelsResponse); None when the service cannot be asked or has none."""
    try:
        response = requests.get(f"{target}/v1/models", timeout=10)
        active = response.json().get("active") if response.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return active if isinstance(active, str) else None
