"""CPU time per request of the service's own code, in process: no sockets, no HTTP server, no client.

The ASGI app `python -m app` serves (`app.main:serve`, settings from the `CVAE_*` environment as
usual) is started through its lifespan and driven directly on uvloop, `--concurrency` requests at a
time, each `--rounds` times per repeat; the CPU time of the process and of each of its threads (from
/proc) is divided by the requests. Without uvicorn and a load generator sharing the cores, this moves
much less from run to run than `make bench` and shows which thread a change helps. Answers must be
200 (or `--status`), or the run stops. The access log is written to stderr as the server writes it
(redirect it: `2>/dev/null` or a file).

Run: `python -m benchmarks.cpu_in_process --registry registry [--body '{"text": "42"}']`.
For the refusal path: `CVAE_REQUEST_TIMEOUT_S=0.05 python -m benchmarks.cpu_in_process --status 503
--body '{"text": "01234567890123456789012345678901", "samples": 16, "scale": 8}'`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from pathlib import Path

import uvloop
from starlette.types import ASGIApp, Message

from app.logs import configure_logging
from app.main import serve
from app.settings import get_settings


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of each live thread of this process, by thread name."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    seconds = {}
    for tid, name in names.items():
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        seconds[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


async def request(app: ASGIApp, body: bytes, status: int) -> None:
    """One POST /generate through the app; its status must be `status`."""
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/generate",
        "raw_path": b"/generate",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    given = False
    answered: list[Message] = []

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        answered.append(message)

    await app(scope, receive, send)
    if answered[0]["status"] != status:
        raise SystemExit(f"answered {answered[0]['status']}, expected {status}: {answered[-1].get('body')!r}")


async def run(args: argparse.Namespace) -> list[dict[str, float]]:
    """Start the app, warm it up, then `args.repeats` measured repeats; each: CPU microseconds a request."""
    app = serve(get_settings())
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"the app did not start: {started}")
    body = args.body.encode()

    async def rounds(count: int) -> None:
        for _ in range(count):
            await asyncio.gather(*(request(app, body, args.status) for _ in range(args.concurrency)))

    await rounds(10)  # warm-up
    repeats = []
    for _ in range(args.repeats):
        before, process_before = thread_cpu_seconds(), time.process_time()
        await rounds(args.rounds)
        after, process_after = thread_cpu_seconds(), time.process_time()
        n = args.concurrency * args.rounds
        figures = {"process": (process_after - process_before) / n * 1e6}
        for name, seconds in after.items():
            if seconds > before.get(name, 0.0):
                figures[name] = (seconds - before.get(name, 0.0)) / n * 1e6
        repeats.append(figures)
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan
    return repeats


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registry", type=Path, help="the registry to serve (default: CVAE_REGISTRY)")
    parser.add_argument("--body", default=json.dumps({"text": "42"}), help="the POST /generate body")
    parser.add_argument("--status", type=int, default=200, help="the status every answer must have")
    parser.add_argument("--concurrency", type=positive, default=64)
    parser.add_argument(
        "--rounds", type=positive, default=40, help="rounds of --concurrency requests a repeat"
    )
    parser.add_argument("--repeats", type=positive, default=5)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.registry is not None:
        os.environ["CVAE_REGISTRY"] = str(args.registry)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)  # as the server: an access line a request
    repeats = uvloop.run(run(args))
    for figures in repeats:
        print("  ".join(f"{name} {us:.0f} us" for name, us in figures.items()))
    median = statistics.median(figures["process"] for figures in repeats)
    shape = f"{len(repeats)} repeats of {args.rounds} x {args.concurrency}"
    print(f"CPU per request, median of {shape}: {median:.0f} us")


if __name__ == "__main__":
    main()
