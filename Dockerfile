# syntax=docker/dockerfile:1
# The CVAE digits service: `python -m app` (uvicorn) serving the registry volume /data/registry.
#
#   docker build -t cvae-digits .                      # CPU torch (default)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t cvae-digits:cuda .
#   docker build --target loadtest -t cvae-digits-loadtest .   # Locust + the load-test runner
#
# Stages: base (Python, non-root user) -> builder (venv: torch first, then the project) -> runtime (base +
# the venv only: no compilers, sources, tests or pip caches). The last stage is the default target.
# BASE_IMAGE may be any Debian-like image with python3 (>= 3.11) and its venv module; `make container-smoke`
# builds on a debootstrapped Debian bookworm.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 cvae \
    && useradd --system --uid 10001 --gid cvae --create-home --home-dir /home/cvae \
       --shell /usr/sbin/nologin cvae

FROM base AS builder
# torch goes in first and pinned: its index decides the build (CPU by default, a CUDA index for GPUs).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PYPI_INDEX_URL=https://pypi.org/simple
WORKDIR /src
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" --extra-index-url "${PYPI_INDEX_URL}" \
       "torch==${TORCH_VERSION}"
COPY pyproject.toml ./
COPY model ./model
COPY training ./training
COPY app ./app
# The project's `torch>=2.2` is met by the torch above, so no other build of torch is pulled in.
RUN pip install --no-cache-dir --index-url "${PYPI_INDEX_URL}" . \
    && python -c "import torch, app, model, training; print('torch', torch.__version__)"

FROM builder AS loadtest-builder
RUN pip install --no-cache-dir --index-url "${PYPI_INDEX_URL}" "locust>=2.30"

# `docker build --target loadtest`: the load-test runner and Locust (compose service `loadtest`).
FROM base AS loadtest
COPY --from=loadtest-builder /opt/venv /opt/venv
WORKDIR /opt/cvae
COPY loadtest ./loadtest
RUN mkdir -p /reports && chown cvae:cvae /reports
USER 10001:10001
CMD ["python", "-m", "loadtest", "--help"]

FROM base AS runtime
COPY --from=builder /opt/venv /opt/venv
ENV CVAE_REGISTRY=/data/registry \
    CVAE_HOST=0.0.0.0 \
    CVAE_PORT=8000 \
    CVAE_WORKERS=1
# A fresh named volume takes this directory's owner, so the non-root user can write the registry.
RUN mkdir -p /data/registry && chown cvae:cvae /data/registry
VOLUME ["/data/registry"]
USER 10001:10001
WORKDIR /home/cvae
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CVAE_PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app"]
