"""`python -m model`: the registry from the command line.

    python -m model list                 every version, the active one marked, with its main figures
    python -m model promote VERSION      make VERSION the active one, once its checkpoint loads

`--registry` defaults to $CVAE_REGISTRY, else ./registry (as the service and the training job).
A running service follows the active pointer within `CVAE_REGISTRY_POLL_S`, so `promote` rolls a
fleet forward or back without the admin API, e.g. `docker compose run --rm trainer python -m model
promote v0003`, or in Kubernetes from a pod that mounts the registry read-write (docs/deploy.md). Exit
status 2 when the registry, the version or its checkpoint is not usable, or the registry cannot be
written from here; the active pointer is then left as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from model.checkpoint import load_checkpoint
from model.errors import ModelError, RegistryError
from model.registry import Registry, VersionInfo, default_registry

COLUMNS = ("", "version", "created (UTC)", "preset", "data", "epochs", "val -ELBO", "test -ELBO")


def _figure(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _section(record: dict[str, Any], key: str) -> dict[str, Any]:
    section = record.get(key)
    return section if isinstance(section, dict) else {}


def _row(version: VersionInfo, active: str | None) -> tuple[str, ...]:
    mark = "*" if version.name == active else ""
    if version.metadata is None:
        return (mark, version.name, f"unreadable: {version.error}")
    record = version.metadata
    metrics, data = _section(record, "metrics"), _section(record, "data")
    created = str(record.get("created_at", "-"))[:16].replace("T", " ")
    return (
        mark,
        version.name,
        created,
        str(record.get("preset", "-")),
        str(data.get("source", "-")),
        str(metrics.get("epochs_run", "-")),
        _figure(metrics, "val_neg_elbo"),
        _figure(metrics, "test_neg_elbo"),
    )


def _active(registry: Registry) -> tuple[str | None, str]:
    """The active version, and how to show it (a broken pointer is shown, not raised)."""
    active, why = registry.active_or_why()
    return active, active or (f"none ({why})" if why else "none")


def list_versions(registry: Registry) -> int:
    """Print the versions as a table (oldest first), the active one marked with `*`."""
    active, shown = _active(registry)
    versions = registry.versions()
    print(f"registry {registry.root}: {len(versions)} version(s), active: {shown}")
    if not versions:
        return 0
    rows = [COLUMNS, *(_row(v, active) for v in versions)]
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
    return 0


def promote(registry: Registry, version: str) -> int:
    """Make `version` active after loading its checkpoint (sha256 and bounds checked, no pickle)."""
    name = registry.resolve(version)
    load_checkpoint(registry.path(name), "cpu")
    _, before = _active(registry)
    registry.promote(name)
    print(f"{name} is active (was {before}); running services follow within CVAE_REGISTRY_POLL_S")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__.split("\n")[0])
    where = "registry directory ($CVAE_REGISTRY, else ./registry)"
    parser.add_argument("--registry", type=Path, default=None, help=where)
    # also after the command (`python -m model list --registry R`); not given there = the one before it
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--registry", type=Path, default=argparse.SUPPRESS, help=where)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[after], help="every version, the active one marked")
    promoting = commands.add_parser(
        "promote", parents=[after], help="make a version the active one, once it loads"
    )
    promoting.add_argument("version", help="a version name, e.g. v0003")
    args = parser.parse_args(argv)
    root = args.registry if args.registry is not None else default_registry()
    try:
        if not root.is_dir():
            raise RegistryError(f"registry {root} does not exist")
        registry = Registry(root)
        if args.command == "list":
            return list_versions(registry)
        return promote(registry, args.version)
    except (ModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
