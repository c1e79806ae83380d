"""IDX parsing: round trips and a clear error for each kind of malformed file."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, load_idx_directory
from training.idx import IdxError, read_idx, write_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    assert np.array_equal(read_idx(tmp_path / name), array)


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    array = np.arange(20, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "bad magic"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05", "not supported"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "needs 5 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "needs 1 bytes"),
    ],
)
def test_malformed_files_raise_idx_error(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(payload)
    with pytest.raises(IdxError, match=message):
        read_idx(path)


def test_corrupt_gzip_is_an_idx_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")[:-6])
    with pytest.raises(IdxError, match="cannot read"):
        read_idx(path)


def _write_set(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)


def test_directory_with_train_and_test_sets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write_set(
        tmp_path,
        "train",
        rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 30, dtype=np.uint8),
    )
    _write_set(
        tmp_path,
        "t10k",
        rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 7, dtype=np.uint8),
    )
    train, test = load_idx_directory(tmp_path)
    assert len(train) == 30 and test is not None and len(test) == 7


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8), "labels for 4 images"),
        (np.zeros((4, 32, 32), np.uint8), np.zeros(4, np.uint8), "N x 28 x 28"),
        (np.zeros((4, 28, 28), np.uint8), np.full(4, 12, np.uint8), "labels must be 0..9"),
    ],
)
def test_inconsistent_sets_are_data_errors(tmp_path: Path, images, labels, message: str) -> None:
    _write_set(tmp_path, "train", images, labels)
    with pytest.raises(DataError, match=message):
        load_idx_directory(tmp_path)


def test_missing_files_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs train-images"):
        load_idx_directory(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_idx_directory(tmp_path / "nope")
