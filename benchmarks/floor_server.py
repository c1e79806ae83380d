"""The floor of the overload burst: a server that does nothing but refuse, as fast as uvicorn can.

uvicorn as `make serve` runs it (the same worker count, uvloop and httptools, no access log), with a
bare ASGI app that answers every request `503` + `Retry-After: 1` as soon as its body is in (`GET
/readyz`: 200). The overload burst's 503 latencies against it are what this machine's HTTP layer and
the load generator cost on their own: no service refuses faster on the same machine, so the benchmark
prints them beside the project's. Run: `python -m benchmarks.floor_server PORT`.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.types import Receive, Scope, Send

from app.settings import get_settings

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


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.floor_server PORT`: as many workers as the service would start."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    port = parser.parse_args(argv).port
    workers = get_settings().worker_count(cuda=False)
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
