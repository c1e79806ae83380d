"""Child processes (the service, Prometheus, Locust): started in their own process group, always stopped.

Shared by the load test, the benchmarks and the tests; loadtest/server.py builds the service on it.

Every process runs in a new session so that a Ctrl-C in the terminal reaches only the runner, which then
stops the children in order (SIGTERM to the whole group, SIGKILL after a grace period): uvicorn workers
and anything else a child forks go with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


class StartError(RuntimeError):
    """A child process did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file ('' when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> int | None:
    """SIGTERM the process group, wait up to `grace_s`, then SIGKILL it; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers the leader left behind
    return proc.returncode


def spawn(
    cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own process group, its output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=True,
        )


@contextlib.contextmanager
def running(
    cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, grace_s: float = 20.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` (see `spawn`); stop it when the block ends."""
    proc = spawn(cmd, log_path, env)
    try:
        yield proc
    finally:
        stop(proc, grace_s)


def http_status(url: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_http_ok(
    url: str,
    timeout_s: float,
    proc: subprocess.Popen | None = None,
    log_path: Path | None = None,
    name: str = "process",
) -> None:
    """Poll `url` until it answers 200; fail early if `proc` (called `name`) exits, with its log tail."""
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = http_status(url)
        if status == 200:
            return
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
            raise StartError(f"{name} exited with {proc.returncode} ({proc.args!r}):\n{tail}")
        time.sleep(0.1)
    tail = log_tail(log_path) if log_path else ""
    raise StartError(f"{url} did not answer 200 within {timeout_s:.0f} s (last answer: {status})\n{tail}")


def run_foreground(cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
    """Run a short job with its output on our stderr (stdout is kept for the report path)."""
    result = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=sys.stderr, env=env, check=False)
    if result.returncode != 0:
        raise StartError(f"{' '.join(cmd)} failed with exit code {result.returncode}")
