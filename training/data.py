"""Training data: the bundled MNIST sample, the full MNIST (training/fetch_mnist.py), or any
directory of MNIST-named IDX files.

Every source yields `Digits`: uint8 images (N, 28, 28) and labels (N,), with a fingerprint
(sha256 of the bytes) recorded in each version's metadata. `split` makes the deterministic
train/validation split by seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.config import IMAGE_SIDE
from training import fetch_mnist
from training.errors import DataError
from training.idx import IdxError, read_idx

BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "bundled"
BUNDLED_SHA256 = {
    "train-images-idx3-ubyte.gz": "d3ca3edc94479149c931c39d29bea0c74930710546d49c0f007a2743c1436a66",
    "train-labels-idx1-ubyte.gz": "90a5104fcc3b28740476f5545ec6579a11daed8a4330dc2ede05ea153f69fb98",
}


@dataclass(frozen=True)
class Digits:
    """Images (N, IMAGE_SIDE, IMAGE_SIDE) uint8 white-on-black, labels (N,) in 0..9."""

    images: np.ndarray
    labels: np.ndarray
    source: str

    @property
    def fingerprint(self) -> str:
        """sha256 over the image and label bytes: identifies the data a model was trained on."""
        digest = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Digits:
        return Digits(self.images[index], self.labels[index], self.source)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _pair(directory: Path, prefix: str, required: bool) -> Digits | None:
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        if required:
            raise DataError(
                f"{directory} needs {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]"
            )
        return None
    try:
        images, labels = read_idx(images_path), read_idx(labels_path)
    except IdxError as exc:
        raise DataError(str(exc)) from exc
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{images_path}: images must be N x {IMAGE_SIDE} x {IMAGE_SIDE}, got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: {labels.shape} labels for {len(images)} images")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    return Digits(images, labels, str(directory))


def load_idx_directory(directory: Path | str) -> tuple[Digits, Digits | None]:
    """The train set (required) and the t10k test set (if present) of an MNIST-style directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory {directory} does not exist")
    train = _pair(directory, "train", required=True)
    assert train is not None
    return train, _pair(directory, "t10k", required=False)


def _verify(path: Path, expected: str) -> None:
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: sha256 {actual} does not match the expected {expected}")


def load_bundled() -> Digits:
    """The 10,000 MNIST training digits shipped with the project (checked by sha256)."""
    for name, digest in BUNDLED_SHA256.items():
        _verify(BUNDLED_DIR / name, digest)
    train, _ = load_idx_directory(BUNDLED_DIR)
    return Digits(train.images, train.labels, "bundled")


def load_data(spec: str) -> tuple[Digits, Digits | None]:
    """`bundled`, `mnist` (alias `download`: the full MNIST, fetched into its cache when missing)
    or a directory path -> (train data, optional test data)."""
    if spec == "bundled":
        return load_bundled(), None
    if spec in ("mnist", "download"):
        return load_idx_directory(fetch_mnist.fetch())
    return load_idx_directory(Path(spec))


def split(data: Digits, val_fraction: float, seed: int) -> tuple[Digits, Digits]:
    """Deterministic train/validation split: a seeded permutation, the first share is validation."""
    if not 0 < val_fraction < 1:
        raise DataError("the validation fraction must be between 0 and 1")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(len(data) * val_fraction)))
    return data.subset(order[n_val:]), data.subset(order[:n_val])
