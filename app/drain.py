"""SIGTERM starts a drain: /readyz turns 503 at once, requests keep being answered, then the server stops.

The lifespan wraps the SIGTERM handler the server installed (uvicorn's graceful shutdown, in every worker
process). At the first SIGTERM the service begins draining at once; after `drain_delay_s` (time for a load
balancer's health check to take the replica out; on Kubernetes the pod's preStop pause does the same job)
the server's own handler runs: uvicorn stops accepting, lets in-flight requests finish, then the lifespan
drains the batcher's queue and the process exits 0. A second SIGTERM during the delay stops at once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

Restore = Callable[[], None]


def drain_on_sigterm(begin_drain: Callable[[], bool], delay_s: float) -> Restore:
    """Route SIGTERM through `begin_drain` (True the first time) and delay the server's handler by
    `delay_s`; returns a function that puts the server's handler back. Off the main thread (an in-process
    test client) or without a server handler, nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # no server shutdown to delay (SIG_DFL / SIG_IGN)
        return lambda: None
    server_handler: Callable[[int, FrameType | None], object] = previous
    loop = asyncio.get_running_loop()

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if not begin_drain() or delay_s <= 0:  # a second signal, or no delay: shut down now
            server_handler(sig, frame)
            return
        loop.call_soon_threadsafe(loop.call_later, delay_s, server_handler, sig, None)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore
