"""Assertions every reliability test shares: an error body is JSON with a `detail`, and leaks nothing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.builders import figures

# What a stack trace or a server-side path looks like in a body: none of it may reach a client.
LEAK_MARKERS = (
    "Traceback",
    'File "',
    '.py"',
    ".py:",
    "site-packages",
    "/work",
    "/tmp",
    "/home",
    "/root",
    "/usr/",
    "/opt/",
    "/data/",
)


def leaks_in(text: str) -> list[str]:
    """The leak markers found in `text`."""
    return [marker for marker in LEAK_MARKERS if marker in text]


def assert_clean_error_body(
    status: int, body: bytes, request_id: str | None = None, key: str = "detail"
) -> dict:
    """A 4xx/5xx body: a JSON object with a non-empty `detail` (the Open Inference Protocol's paths:
    `error`) and the request id, no trace, no path."""
    assert 400 <= status < 600, status
    text = body.decode("utf-8", errors="replace")
    assert not leaks_in(text), f"{status} body leaks {leaks_in(text)}: {text[:300]}"
    parsed = json.loads(text)
    assert isinstance(parsed, dict) and parsed.get(key), f"{status} without a {key}: {text[:300]}"
    if request_id is not None:
        assert parsed.get("request_id") == request_id
    figures.add("error bodies scanned for traces and paths")
    return parsed


def assert_clean_error(response: httpx.Response) -> dict:
    """`assert_clean_error_body` for an httpx response (JSON content type, the id echoed in the body)."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    return assert_clean_error_body(response.status_code, response.content, response.headers["x-request-id"])


def assert_log_has_no_traceback(log: str) -> None:
    """The server log holds no stack trace (known errors are logged as one clear line)."""
    assert "Traceback" not in log, log[-3000:]


def vm_kib(pid: int, field: str) -> int:
    """A memory figure of a process from /proc (VmRSS = now, VmHWM = peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)
