"""The pretrained default the project ships, and seeding an empty registry with it.

`model/pretrained/mnist/` is a registry version (weights, metadata, samples.png, training.png)
trained by the training job on the full 60,000 MNIST training digits; its metadata records the
command, data fingerprint and seed that reproduce it (docs/model.md). `make serve` runs

    python -m model.shipped --registry REGISTRY

which publishes and promotes it when REGISTRY has no version at all, and leaves any other registry
alone, so a fresh clone serves at once instead of training first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.errors import ModelError
from model.registry import Registry

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained" / "mnist"


def seed_registry(registry: Registry, source: Path = PRETRAINED_DIR) -> str | None:
    """Publish and promote the shipped version in a registry that has no version; returns its new
    name, or None (nothing written) when the registry already has versions."""
    if registry.version_names():
        return None
    version = registry.import_version(source)
    registry.promote(version)
    return version


def main(argv: list[str] | None = None) -> int:
    """Seed the registry if it is empty; exit code 2 when the shipped files are missing or corrupt."""
    parser = argparse.ArgumentParser(prog="python -m model.shipped", description=__doc__.split("\n")[0])
    parser.add_argument("--registry", type=Path, required=True, help="registry directory to seed")
    args = parser.parse_args(argv)
    registry = Registry(args.registry, writer=True)
    try:
        version = seed_registry(registry)
    except (ModelError, OSError) as exc:
        print(f"error: cannot seed {args.registry} with the shipped model: {exc}", file=sys.stderr)
        return 2
    if version is None:
        print(f"registry {args.registry} already has versions; the shipped model was not added", flush=True)
        if registry.active_or_why()[0] is None:  # a broken pointer: the service says why
            print(
                "none of them is active, so a service will not be ready: python -m model list shows them, "
                "python -m model promote VERSION makes one active",
                flush=True,
            )
    else:
        print(f"registry {args.registry}: the shipped pretrained model is {version}, active", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
