"""The floor of the overload burst: servers that do nothing but refuse, as fast as they can.

- `python -m benchmarks.floor_server PORT`: uvicorn as `make serve` runs it (the same worker count,
  uvloop and httptools, no access log), with a bare ASGI app that answers every request `503` +
  `Retry-After: 1` as soon as its body is in (`GET /readyz`: 200). No Python service refuses faster.
- `haproxy_floor(port, threads)`: HAProxy (C, event-driven, one thread per worker) answering the same
  503 itself once the body is in: what the machine and the load generator cost with no Python at all.

The overload burst's 503 latencies against them are what this machine's HTTP layer and the load
generator cost on their own, so the benchmark prints them beside the project's.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.types import Receive, Scope, Send

from app.settings import get_settings
from loadtest.fleet import haproxy_binary
from loadtest.processes import running, wait_http_ok
from model.device import resolve_device

_REFUSED = b'{"detail":"refused at once: the floor server does no work"}'
_REFUSED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_REFUSED)).encode()),
    (b"retry-after", b"1"),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """503 for every request once its body is read; 200 for GET /readyz."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/readyz":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await send({"type": "http.response.start", "status": 503, "headers": _REFUSED_HEADERS})
    await send({"type": "http.response.body", "body": _REFUSED})


# HAProxy answers from its request rules: 200 for /readyz, else the same 503 as `app`. With
# `http-buffer-request` the rules run once the body is in, as `app` answers.
HAPROXY_CONFIG = """\
global
    nbthread {threads}
    maxconn 4096
defaults
    mode http
    option http-buffer-request
    timeout client 60s
    timeout connect 5s
    timeout server 60s
frontend refuse
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok if {{ path /readyz }}
    http-request return status 503 content-type application/json string '{body}' hdr retry-after 1
"""


@contextlib.contextmanager
def haproxy_floor(port: int, threads: int) -> Iterator[str]:
    """HAProxy refusing every request on 127.0.0.1:`port` with `threads` threads; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="cvae-floor-") as scratch:
        config = Path(scratch) / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(threads=threads, port=port, body=_REFUSED.decode()))
        log = Path(scratch) / "haproxy.log"
        with running([haproxy_binary(), "-db", "-f", str(config)], log, grace_s=5) as proc:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{url}/readyz", timeout_s=30, proc=proc, log_path=log, name="haproxy")
            yield url


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.floor_server PORT`: as many workers as the service would start with these
    settings (`python -m app`: one on CUDA)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    port = parser.parse_args(argv).port
    settings = get_settings()
    workers = settings.worker_count(cuda=resolve_device(settings.device).type == "cuda")
    uvicorn.run(
        "benchmarks.floor_server:app",
        host="127.0.0.1",
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
