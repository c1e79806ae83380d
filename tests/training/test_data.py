"""Data sources: the bundled sample and the deterministic split (the full MNIST: test_fetch_mnist.py)."""

from pathlib import Path

import numpy as np
import pytest

from training import data as data_module
from training.data import DataError, load_bundled, load_data, split


def test_bundled_sample_is_the_10000_mnist_digits() -> None:
    data = load_bundled()
    assert data.images.shape == (10_000, 28, 28) and data.images.dtype == np.uint8
    assert sorted(set(data.labels.tolist())) == list(range(10))
    assert np.bincount(data.labels).min() > 800
    assert data.images.max() == 255 and data.images[:, 0, :].max() == 0  # white ink on black


def test_bundled_files_are_checked_by_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in data_module.BUNDLED_SHA256:
        payload = bytearray((data_module.BUNDLED_DIR / name).read_bytes())
        payload[-1] ^= 0xFF
        (tmp_path / name).write_bytes(bytes(payload))
    monkeypatch.setattr(data_module, "BUNDLED_DIR", tmp_path)
    with pytest.raises(DataError, match="sha256"):
        load_bundled()


def test_split_is_deterministic_by_seed_and_disjoint() -> None:
    data = load_bundled()
    train_a, val_a = split(data, 0.1, seed=3)
    train_b, val_b = split(data, 0.1, seed=3)
    _, val_c = split(data, 0.1, seed=4)
    assert len(val_a) == 1000 and len(train_a) == 9000
    assert np.array_equal(val_a.images, val_b.images) and np.array_equal(train_a.labels, train_b.labels)
    assert not np.array_equal(val_a.images, val_c.images)
    assert train_a.fingerprint != val_a.fingerprint
    with pytest.raises(DataError):
        split(data, 1.5, seed=0)


def test_unknown_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        load_data(str(tmp_path / "missing"))
