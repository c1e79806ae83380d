"""Run the standard HTTP load generator `hey` (Debian package `hey`) and read its per-request CSV.

`hey -o csv` prints one line per answered request: response time, connection/DNS/write/wait/read
times, status code and the offset from the start. Requests that got no answer (connection errors,
client timeouts) are not in the CSV; `Run.missing` counts them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field

BINARY = "hey"


class HeyMissing(RuntimeError):
    """`hey` is not installed."""


@dataclass
class Run:
    """What one `hey` run measured."""

    seconds: list[float] = field(default_factory=list)  # response time of each answered request
    statuses: list[int] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)  # start of each request from the run's start
    wall_s: float = 0.0
    missing: int = 0  # asked for but never answered (only known for -n runs)

    def count(self, status: int) -> int:
        return sum(1 for s in self.statuses if s == status)

    def times(self, status: int) -> list[float]:
        return [t for t, s in zip(self.seconds, self.statuses, strict=True) if s == status]

    @property
    def rps(self) -> float:
        """Requests answered 200 per second of the run."""
        return self.count(200) / self.wall_s if self.wall_s else 0.0


def require() -> str:
    """The path of `hey`, or HeyMissing saying how to install it."""
    path = shutil.which(BINARY)
    if path is None:
        raise HeyMissing("the benchmark uses `hey`: apt-get install hey (Debian/Ubuntu package)")
    return path


def hey(
    url: str,
    body: dict,
    *,
    clients: int,
    requests: int | None = None,
    duration_s: float | None = None,
    timeout_s: float = 30,
) -> Run:
    """POST `body` as JSON to `url` from `clients` workers: `requests` in all, or for `duration_s`."""
    command = [require(), "-c", str(clients), "-m", "POST", "-T", "application/json", "-d", json.dumps(body)]
    command += ["-t", f"{timeout_s:g}", "-o", "csv"]
    command += ["-z", f"{duration_s:g}s"] if duration_s is not None else ["-n", str(requests)]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    run = parse_csv(done.stdout)
    if requests is not None and duration_s is None:
        run.missing = requests - len(run.statuses)
    return run


def parse_csv(text: str) -> Run:
    """Read `hey -o csv` output."""
    run = Run()
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) != 8 or not parts[0][:1].isdigit():
            continue  # the header
        seconds, status, offset = float(parts[0]), int(parts[6]), float(parts[7])
        run.seconds.append(seconds)
        run.statuses.append(status)
        run.offsets.append(offset)
    run.wall_s = max((o + t for o, t in zip(run.offsets, run.seconds, strict=True)), default=0.0)
    return run
