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


def _active_in(body: Any) -> str | None:
    """The active version in a /v1/models body, whichever of the usual shapes it has."""
    if not isinstance(body, dict):
        return None
    for key in ("active", "active_version"):
        if isinstance(body.get(key), str):
            return str(body[key])
    for item in body.get("versions") or body.get("models") or body.get("data") or []:
        if isinstance(item, dict) and item.get("active") is True:
            return str(item.get("version") or item.get("name") or item.get("id"))
    return None


def model_version(target: str) -> str | None:
    """The service's active model version (None when it cannot be told)."""
    try:
        response = requests.get(f"{target}/v1/models", timeout=10)
        return _active_in(response.json()) if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
