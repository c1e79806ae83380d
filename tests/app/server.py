"""Start the real service (`python -m app`) on a free 127.0.0.1 port for end-to-end tests.

`running_server(registry, **settings)` is the context manager other test packages reuse: keyword
settings become `CVAE_<NAME>` environment variables, `env=` adds raw variables, and the server is
waited for on /readyz (or /healthz with `ready=False`, e.g. for an empty registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtest.processes import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0


@dataclass
class ServerProcess:
    """A started server: its process, URL and log file."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, wait for a graceful exit (kill after `timeout_s`); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def server_env(registry: Path, port: int, env: dict[str, str] | None, **settings: object) -> dict[str, str]:
    """The environment of a server process: ours, minus stray CVAE_* settings, plus the given ones."""
    result = {
        k: v for k, v in os.environ.items() if not k.startswith("CVAE_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    result.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        CVAE_REGISTRY=str(registry),
        CVAE_PORT=str(port),
        CVAE_HOST="127.0.0.1",
        CVAE_LOG_JSON="true",
        CVAE_WORKERS="1",  # one process, whose state the tests observe; a test asks for more explicitly
    )
    result.update({f"CVAE_{name.upper()}": str(value) for name, value in settings.items()})
    result.update(env or {})
    return result


def start_server(
    registry: Path, *, ready: bool = True, env: dict[str, str] | None = None, **settings: object
) -> ServerProcess:
    """Start `python -m app` and wait until it answers (/readyz, or /healthz when `ready=False`)."""
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="cvae-server-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=REPO,
        env=server_env(registry, port, env, **settings),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", Path(log_file.name))
    try:
        _wait_until_up(server, "/readyz" if ready else "/healthz")
    except BaseException:
        server.stop(5)
        raise
    return server


def _wait_until_up(server: ServerProcess, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.base_url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not up on {path} after {START_TIMEOUT_S} s:\n{server.log()[-3000:]}")


@contextlib.contextmanager
def running_server(
    registry: Path, *, ready: bool = True, env: dict[str, str] | None = None, **settings: object
) -> Iterator[str]:
    """A real server for the block; yields its base URL and stops it (SIGTERM) afterwards."""
    server = start_server(registry, ready=ready, env=env, **settings)
    try:
        yield server.base_url
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


def generate_concurrently(base_url: str, bodies: list[dict]) -> list[httpx.Response]:
    """POST every body to /generate at once, one connection each; the answers in order."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(client.post("/generate", json=body) for body in bodies))

    return asyncio.run(run())
