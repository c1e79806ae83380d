"""How many CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota (containers)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may run on (sched_getaffinity), at most its cgroup quota rounded up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs allowed by the quota of this process's cgroup (v2 `cpu.max` or v1 `cpu.cfs_quota_us`), None
    when there is none."""
    v2, v1 = _own_paths(proc_cgroup)
    for directory in (root / v2, root):
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        except (OSError, ValueError):
            continue
    for directory in (root / "cpu" / v1, root / "cpu"):
        try:
            quota_us = int((directory / "cpu.cfs_quota_us").read_text())
            period_us = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def _own_paths(proc_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup paths (v2 unified, v1 cpu controller), relative; '' when unknown."""
    v2 = v1 = ""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            v2 = path.lstrip("/")
        elif "cpu" in controllers.split(","):
            v1 = path.lstrip("/")
    return v2, v1
