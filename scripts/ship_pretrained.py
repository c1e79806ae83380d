"""Copy a trained registry version into the package as the shipped pretrained model.

    python scripts/ship_pretrained.py --registry REGISTRY --version v0001 --command "COMMAND"

Writes model/pretrained/mnist/ (model.safetensors, metadata.json, samples.png, training.png),
adding to the metadata a `shipped` record: the command, the data fingerprint and the seed that
reproduce it. The weights are verified against their sha256 before and after the copy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.checkpoint import METADATA_FILE, load_checkpoint, read_metadata, write_json  # noqa: E402
from model.registry import Registry  # noqa: E402
from model.shipped import PRETRAINED_DIR  # noqa: E402

FILES = ("model.safetensors", "samples.png", "training.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--command", required=True, help="the exact command that trained the version")
    args = parser.parse_args()
    source = Registry(args.registry).path(args.version)
    load_checkpoint(source)
    metadata = read_metadata(source)
    PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(source / name, PRETRAINED_DIR / name)
    metadata["shipped"] = {
        "command": args.command,
        "data_fingerprint": metadata["data"]["fingerprint"],
        "test_fingerprint": metadata["data"].get("test_fingerprint"),
        "seed": metadata["training"]["seed"],
        "world_size": metadata["environment"].get("world_size", 1),
        "trained_as": f"{args.registry.name}/{args.version}",
    }
    write_json(PRETRAINED_DIR / METADATA_FILE, metadata)
    load_checkpoint(PRETRAINED_DIR)
    print(f"shipped {source} -> {PRETRAINED_DIR}")


if __name__ == "__main__":
    main()
