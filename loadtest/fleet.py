"""A fleet on loopback: API replicas (`python -m app`) sharing one registry, behind a real HAProxy.

`Replica` is one service process (loadtest.server) on its own 127.0.0.1 port that can be stopped
(SIGTERM: it drains and exits), killed (SIGKILL) and started again on the same port. `HAProxy` runs
deploy/haproxy/haproxy.cfg, the file the compose stack uses, with the replica addresses in its
environment, and reads the state of each server from its stats page.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.processes import StartError, free_port, log_tail, spawn, stop
from loadtest.server import ServerProcess, start_server

REPO = Path(__file__).resolve().parents[1]
HAPROXY_CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
REPLICA_NAMES = ("api1", "api2", "api3")  # the servers deploy/haproxy/haproxy.cfg declares locally


@dataclass
class Replica:
    """One `python -m app` process (loadtest.server) on a fixed loopback port, restartable."""

    name: str
    registry: Path
    log_path: Path
    settings: dict[str, Any]  # Settings fields, as start_server takes them
    port: int = field(default_factory=free_port)
    server: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the service on this replica's port and wait until /readyz answers 200."""
        self.server = start_server(self.registry, port=self.port, log_path=self.log_path, **self.settings)

    def terminate(self, grace_s: float = 60.0) -> int | None:
        """SIGTERM (the replica drains), wait for its exit; returns the exit code."""
        return self.server.stop(grace_s) if self.server else None

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, nothing drains."""
        if self.server and self.server.process.poll() is None:
            os.killpg(self.server.process.pid, signal.SIGKILL)
            self.server.process.wait(10)

    def alive(self) -> bool:
        return self.server is not None and self.server.process.poll() is None


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if not found:
        raise StartError("haproxy is not installed: `make deps-haproxy` (Debian package haproxy)")
    return found


@dataclass
class HAProxy:
    """HAProxy running deploy/haproxy/haproxy.cfg in front of the given replicas."""

    replicas: list[Replica]
    log_path: Path
    port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(CVAE_LB_BIND=f"127.0.0.1:{self.port}", CVAE_LB_STATS_BIND=f"127.0.0.1:{self.stats_port}")
        for number, replica in enumerate(self.replicas, start=1):
            env[f"CVAE_LB_API_{number}"] = f"127.0.0.1:{replica.port}"
        return env

    def start(self) -> None:
        """Check the configuration, start HAProxy in the foreground, wait until every server is UP."""
        if len(self.replicas) != len(REPLICA_NAMES):
            raise StartError(f"deploy/haproxy/haproxy.cfg declares {len(REPLICA_NAMES)} local replicas")
        command = [haproxy_binary(), "-f", str(HAPROXY_CONFIG)]
        checked = subprocess.run([*command, "-c"], env=self.env(), capture_output=True, text=True)
        if checked.returncode != 0:
            raise StartError(f"haproxy -c refused {HAPROXY_CONFIG}:\n{checked.stdout}{checked.stderr}")
        self.process = spawn([*command, "-db"], self.log_path, self.env())
        self.wait_for(lambda states: all(states.get(n) == "UP" for n in REPLICA_NAMES), 30.0)

    def stop(self) -> None:
        if self.process:
            stop(self.process, 10.0)

    def stats(self) -> list[dict[str, str]]:
        """The rows of HAProxy's stats CSV (one per frontend, backend and server)."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        return list(csv.DictReader(io.StringIO(text.lstrip("# "))))

    def server_states(self) -> dict[str, str]:
        """Each server of the `api` backend: UP, DOWN, MAINT, ... ("UP 1/2" is reported as UP)."""
        return {
            row["svname"]: row["status"].split()[0]
            for row in self.stats()
            if row["pxname"] == "api" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def backend_counters(self) -> dict[str, int]:
        """Retries and redispatches HAProxy made in the `api` backend, and its 5xx answers."""
        row = next(r for r in self.stats() if r["pxname"] == "api" and r["svname"] == "BACKEND")
        return {key: int(row[key] or 0) for key in ("wretr", "wredis", "hrsp_5xx", "econ", "eresp")}

    def wait_for(self, condition, timeout_s: float) -> float:  # noqa: ANN001 - Callable[[dict], bool]
        """Poll the server states until `condition(states)`; returns the seconds it took."""
        started = time.monotonic()
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise StartError(f"haproxy exited with {self.process.returncode}:\n{log_tail(self.log_path)}")
            try:
                if condition(self.server_states()):
                    return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() - started > timeout_s:
                raise StartError(
                    f"haproxy servers not as expected after {timeout_s:.0f} s: {self.server_states()}"
                )
            time.sleep(0.05)
