#!/usr/bin/env bash
# Writes .device/: what scripts/device_check.sh needs on a CUDA machine that has PyTorch but no network.
#
#   .device/requirements.txt, .device/wheels/  the service's dependencies that such an image usually lacks
#                                              (FastAPI, uvicorn, pydantic, ...), at the versions this
#                                              checkout's .venv runs, as wheels for that machine's Python
#   .device/bin/hey                            the load generator of the benchmark (x86-64)
#   .device/mnist/*.gz                         the full MNIST, sha256-verified (python -m training.fetch_mnist)
#
# Usage: scripts/device_bundle.sh [PYTHON_VERSION]   (default 3.12; about 20 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
python=${VENV:-.venv}/bin/python
bundle=.device

rm -rf "$bundle"
mkdir -p "$bundle/wheels" "$bundle/bin" "$bundle/mnist"
# Pinned: the packages such an image lacks. What they need and the image has (anyio, h11, ...) is not
# pinned, so pip keeps the image's version when it is new enough; the download brings a wheel for each.
"$python" -m pip freeze | grep -i -E '^(fastapi|starlette|pydantic|pydantic[-_]core|pydantic-settings|python-multipart|uvicorn|httptools|python-dotenv|annotated-types|typing[-_]inspection)==' \
    >"$bundle/requirements.txt"
"$python" -m pip download --quiet --only-binary=:all: --implementation cp --python-version "$version" \
    --platform manylinux2014_x86_64 --dest "$bundle/wheels" -r "$bundle/requirements.txt"
hey=$(command -v hey) || { echo "hey is missing: make deps-hey" >&2; exit 1; }
cp "$hey" "$bundle/bin/hey"
mnist=$("$python" -m training.fetch_mnist)
for file in "$mnist"/*-ubyte; do
    gzip -9c "$file" >"$bundle/mnist/$(basename "$file").gz"
done
echo "wrote $bundle ($(du -sh "$bundle" | cut -f1)): $(wc -l <"$bundle/requirements.txt") requirements, $(ls "$bundle/wheels" | wc -l) wheels, hey, MNIST"
