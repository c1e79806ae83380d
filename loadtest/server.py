"""The service as a child process: `python -m app` on a free 127.0.0.1 port, waited for, always stopped.

The one way the tests, the benchmarks and the load test start a server:

    with start_server(registry, admin_token="secret", max_batch_size=8) as server:
        httpx.get(server.base_url + "/generate", ...)

`start_server` returns when the server answers; used in a `with` block, the server is stopped at its end
(without one, call `server.stop()`).

Keyword settings become `CVAE_<NAME>` environment variables of the server. The CVAE_* variables of our
own environment are dropped (a test must not pick up a developer's settings) unless `inherit_settings`
(the load test: its user configures the service there), and so is PROMETHEUS_MULTIPROC_DIR (`python -m app`
makes its own when it runs several workers); `env=` adds raw variables last. The server runs in its own
process group (loadtest.processes), so stopping it also stops its uvicorn workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.processes import free_port, spawn, stop, wait_http_ok

REPO = Path(__file__).resolve().parents[1]
APP_COMMAND = (sys.executable, "-m", "app")
START_TIMEOUT_S = 90.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class ServerProcess:
    """A started server: its process (the leader of its group), base URL and log file."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    temporary_log: bool = False  # made by start_server: removed when the `with` block ends

    def log(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace_s`; returns the exit code."""
        return stop(self.process, grace_s)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self.temporary_log:
            self.log_path.unlink(missing_ok=True)


def server_env(
    registry: Path,
    port: int,
    settings: Mapping[str, object] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    inherit_settings: bool = False,
) -> dict[str, str]:
    """The environment of a server: ours (without CVAE_* unless inherited), the settings, then `env`."""
    result = {
        name: value
        for name, value in os.environ.items()
        if name != MULTIPROC_ENV and (inherit_settings or not name.startswith("CVAE_"))
    }
    python_path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    result.update(
        PYTHONPATH=os.pathsep.join(python_path),
        PYTHONUNBUFFERED="1",
        CVAE_REGISTRY=str(registry),
        CVAE_HOST="127.0.0.1",
        CVAE_PORT=str(port),
    )
    result.update({f"CVAE_{name.upper()}": str(value) for name, value in (settings or {}).items()})
    result.update(env or {})
    return result


def start_server(
    registry: Path,
    *,
    ready: bool = True,
    port: int | None = None,
    command: Sequence[str] = APP_COMMAND,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    inherit_settings: bool = False,
    timeout_s: float = START_TIMEOUT_S,
    **settings: object,
) -> ServerProcess:
    """Start `command` (`python -m app`) and wait until it answers 200 on /readyz (/healthz if not `ready`).

    `port` defaults to a free one; `log_path` to a temporary file. Raises loadtest.processes.StartError
    ("server exited with N" and the log's tail) when the server exits or does not answer in `timeout_s`.
    """
    port = port or free_port()
    temporary_log = log_path is None
    if log_path is None:
        with tempfile.NamedTemporaryFile(prefix="cvae-server-", suffix=".log", delete=False) as log_file:
            log_path = Path(log_file.name)
    environment = server_env(registry, port, settings, env=env, inherit_settings=inherit_settings)
    process = spawn(command, log_path, environment)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path, temporary_log)
    url = server.base_url + ("/readyz" if ready else "/healthz")
    try:
        wait_http_ok(url, timeout_s, process, log_path, name="server")
    except BaseException:
        server.stop(5)
        raise
    return server
