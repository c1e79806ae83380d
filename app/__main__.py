"""`python -m app` / `cvae-serve`: run the service under uvicorn with the `CVAE_*` settings."""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import sys
import tempfile

import uvicorn
from pydantic import ValidationError

from app.connections import ConnectionLimits, LimitedHttpToolsProtocol
from app.logs import configure_logging, log_config
from app.settings import Settings, get_settings
from model.device import resolve_device

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import, in every worker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Optional overrides of the host/port/workers/registry settings (exported as CVAE_* env vars)."""
    parser = argparse.ArgumentParser(prog="cvae-serve", description=__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--registry")
    return parser.parse_args(argv)


def _exit_cleanly(signum: int, frame: object) -> None:
    # uvicorn re-raises the signal it shut down on; ending here instead makes a SIGTERM exit 0.
    raise SystemExit(0)


def http_protocol(settings: Settings) -> functools.partial[LimitedHttpToolsProtocol]:
    """uvicorn's httptools protocol with the connection limits of `settings` (app/connections.py)."""
    limits = ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout_s,
        max_connections=settings.max_connections,
        send_timeout_s=settings.send_timeout_s,
    )
    return functools.partial(LimitedHttpToolsProtocol, limits=limits)


def main(argv: list[str] | None = None) -> None:
    """Start uvicorn (several workers share metrics through a multiprocess directory)."""
    args = parse_args(argv)
    for name in ("host", "port", "workers", "registry"):
        if getattr(args, name) is not None:
            os.environ[f"CVAE_{name.upper()}"] = str(getattr(args, name))
    try:
        settings = get_settings()
        device = resolve_device(settings.device)  # a missing CUDA device fails here, before any worker starts
    except (ValidationError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_json)
    workers = settings.worker_count(cuda=device.type == "cuda")
    own_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        own_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="cvae-metrics-")
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(
            "app.main:serve",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            http=http_protocol(settings),  # type: ignore[arg-type]  # a protocol factory, as uvicorn calls it
            timeout_keep_alive=settings.keep_alive_timeout_s,
            log_config=log_config(settings.log_level, settings.log_json),
            access_log=False,
            timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
        )
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
