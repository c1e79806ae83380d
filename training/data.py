"""Training data: the bundled MNIST sample, any directory of MNIST-named IDX files, or a download.

Every source yields a `Dataset` of uint8 images (N, 28, 28) and labels (N,), with a fingerprint
(sha256 of the bytes) recorded in each version's metadata. `split` makes the deterministic
train/validation split by seed.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.idx import IdxError, read_idx

BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "bundled"
BUNDLED_SHA256 = {
    "train-images-idx3-ubyte.gz": "d3ca3edc94479149c931c39d29bea0c74930710546d49c0f007a2743c1436a66",
    "train-labels-idx1-ubyte.gz": "90a5104fcc3b28740476f5545ec6579a11daed8a4330dc2ede05ea153f69fb98",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
DOWNLOAD_CACHE = Path.home() / ".cache" / "cvae-digits" / "mnist"


class DataError(ValueError):
    """The requested data cannot be used: missing files, malformed IDX, no network for a download."""


@dataclass(frozen=True)
class Dataset:
    """Images (N, 28, 28) uint8 white-on-black, labels (N,) in 0..9."""

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

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.images[index], self.labels[index], self.source)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _pair(directory: Path, prefix: str, required: bool) -> Dataset | None:
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
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images must be N x 28 x 28, got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: {labels.shape} labels for {len(images)} images")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    return Dataset(images, labels, str(directory))


def load_idx_directory(directory: Path | str) -> tuple[Dataset, Dataset | None]:
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


def load_bundled() -> Dataset:
    """The 10,000 MNIST training digits shipped with the project (checked by sha256)."""
    for name, digest in BUNDLED_SHA256.items():
        _verify(BUNDLED_DIR / name, digest)
    train, _ = load_idx_directory(BUNDLED_DIR)
    return Dataset(train.images, train.labels, "bundled")


def download_mnist(cache: Path = DOWNLOAD_CACHE, timeout_s: float = 10.0) -> Path:
    """Fetch the official MNIST files into `cache` (sha256-verified); fails fast without a network."""
    cache.mkdir(parents=True, exist_ok=True)
    for name, digest in MNIST_SHA256.items():
        target = cache / name
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            continue
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                with urllib.request.urlopen(mirror + name, timeout=timeout_s) as response:
                    payload = response.read()
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{mirror}: {exc}")
                continue
            if hashlib.sha256(payload).hexdigest() == digest:
                target.write_bytes(payload)
                break
            errors.append(f"{mirror}: sha256 mismatch")
        else:
            raise DataError(
                f"could not download {name} (no network?): "
                + "; ".join(errors)
                + ". Use --data bundled, or a directory holding the MNIST IDX files."
            )
    return cache


def load_data(spec: str) -> tuple[Dataset, Dataset | None]:
    """`bundled`, `download` or a directory path -> (train data, optional test data)."""
    if spec == "bundled":
        return load_bundled(), None
    if spec == "download":
        return load_idx_directory(download_mnist())
    return load_idx_directory(Path(spec))


def split(data: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Deterministic train/validation split: a seeded permutation, the first share is validation."""
    if not 0 < val_fraction < 1:
        raise DataError("the validation fraction must be between 0 and 1")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, int(round(len(data) * val_fraction)))
    return data.subset(order[n_val:]), data.subset(order[:n_val])
