"""The Dockerfile: hadolint-clean, the stages and settings operators rely on, a working HEALTHCHECK."""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from model.shipped import PRETRAINED_DIR
from tests.builders.tools import REPO, venv_tool

DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    kept = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    joined = re.sub(r"\\\n", " ", kept)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in joined.splitlines())
        if line
    ]


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named stage, in order."""
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for op, args in instructions(text):
        if op == "FROM":
            current = args.split(" AS ")[-1].strip() if " AS " in args else args
            result[current] = []
        elif current is not None:
            result[current].append((op, args))
    return result


def test_hadolint_passes() -> None:
    result = subprocess.run([venv_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """Control: the same call fails on a Dockerfile with known problems."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    result = subprocess.run([venv_tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_stages_and_build_arguments() -> None:
    text = DOCKERFILE.read_text()
    named = stages(text)
    assert list(named)[-1] == "runtime", "the service image must be the default (last) stage"
    assert {"base", "builder", "loadtest", "runtime"} <= set(named)
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS base$", text, re.M)
    assert re.search(r"ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu", text)


def test_torch_is_installed_pinned_before_the_project() -> None:
    runs = [args for op, args in stages(DOCKERFILE.read_text())["builder"] if op == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install .* \.( |$)", r))
    assert torch_at < project_at
    assert all("--no-cache-dir" in r for r in runs if "pip install" in r)


def test_the_installed_project_carries_the_shipped_model() -> None:
    """The seed step (`python -m model.shipped`) reads model/pretrained/ from the installed package."""
    builder = stages(DOCKERFILE.read_text())["builder"]
    assert ("COPY", "model ./model") in builder
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setuptools["package-data"]["model"]
    shipped = [path.relative_to(REPO / "model").as_posix() for path in PRETRAINED_DIR.iterdir()]
    assert "pretrained/mnist/model.safetensors" in shipped
    assert all(any(fnmatch.fnmatch(name, glob) for glob in globs) for name in shipped), (shipped, globs)


def test_runtime_stage_is_small_non_root_and_serves_the_registry_volume() -> None:
    runtime = stages(DOCKERFILE.read_text())["runtime"]
    copies = [args for op, args in runtime if op == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "only the virtualenv goes into the final image"
    assert not any(re.search(r"apt-get|gcc|pip install", args) for op, args in runtime if op == "RUN")
    user = next(args for op, args in runtime if op == "USER")
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    env = " ".join(args for op, args in runtime if op == "ENV")
    for setting in ("CVAE_REGISTRY=/data/registry", "CVAE_HOST=0.0.0.0", "CVAE_WORKERS=1"):
        assert setting in env
    assert ("VOLUME", '["/data/registry"]') in runtime
    assert ("CMD", '["python", "-m", "app"]') in runtime


def healthcheck_code() -> str:
    line = next(args for op, args in stages(DOCKERFILE.read_text())["runtime"] if op == "HEALTHCHECK")
    command = json.loads(line[line.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    return str(command[2])


@contextmanager
def answering(status: int) -> Iterator[int]:
    """A local HTTP server answering every GET with `status`; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(status if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_follows_readyz(status: int, healthy: bool) -> None:
    with answering(status) as port:
        result = subprocess.run(
            [sys.executable, "-c", healthcheck_code()],
            capture_output=True,
            env={"CVAE_PORT": str(port)},
            timeout=30,
        )
    assert (result.returncode == 0) is healthy


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "start from nothing, then allow what the build copies"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for op, args in instructions(DOCKERFILE.read_text()):
        if op == "COPY" and not args.startswith("--from"):
            copied.update(part.rstrip("/").removeprefix("./") for part in args.split()[:-1])
    assert copied <= allowed, copied - allowed
    assert not allowed & {".venv", "registry", "reports", "tests", ".git"}
