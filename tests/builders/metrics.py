"""Reading Prometheus text from /metrics in tests (the parsing is loadtest/exposition.py's)."""

from __future__ import annotations

import httpx

from loadtest.exposition import Samples, parse_samples, value

__all__ = ["scrape", "value"]


def scrape(http: httpx.Client | str) -> Samples:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    text = http.get("/metrics").text if isinstance(http, httpx.Client) else httpx.get(http + "/metrics").text
    return parse_samples(text)
