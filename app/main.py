"""The application factory: settings in, FastAPI app out (the model loads in the lifespan)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from app.api import fastpath
from app.api.routes import api_router
from app.api.routes.web import STATIC_DIR
from app.errors import install_error_handlers
from app.middleware import InFlight, RequestMiddleware
from app.service import lifespan
from app.settings import Settings, get_settings

EXPOSED_HEADERS = [
    "X-Request-ID",
    "X-Model-Version",
    "X-Seed",
    "X-Inference-Ms",
    "X-Label",
    "X-Label-Source",
    "X-ELBO",
    "X-Recon-BCE",
    "X-KL",
    "X-MSE",
    "Retry-After",
]


def create_app(settings: Settings | None = None, *, request_middleware: bool = True) -> FastAPI:
    """Build the app: routes, error mapping, middleware, the demo page when installed.
    `request_middleware=False` leaves out `RequestMiddleware` (and CORS) for `serve`, which puts them
    in front of the app instead."""
    settings = settings or get_settings()
    app = FastAPI(
        title="CVAE digits",
        summary="Handwritten digits from a conditional VAE: generate, encode, reconstruct.",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.in_flight = InFlight()
    install_error_handlers(app)
    app.include_router(api_router(settings))
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if request_middleware:  # added innermost first: CORS (when configured) -> request middleware -> routes
        app.add_middleware(RequestMiddleware, **_request_middleware_options(app))
        if settings.cors_origins:
            app.add_middleware(CORSMiddleware, **_cors_options(settings))
    return app


def serve(settings: Settings | None = None) -> ASGIApp:
    """The ASGI app uvicorn runs (`python -m app`): the request middleware, with the /generate fast path,
    in front of the whole FastAPI app rather than inside its own middleware stack, so the common request
    skips FastAPI's per-request layers; CORS (when configured) in front of both."""
    app = create_app(settings, request_middleware=False)
    served: ASGIApp = RequestMiddleware(app, **_request_middleware_options(app))
    if app.state.settings.cors_origins:
        served = CORSMiddleware(served, **_cors_options(app.state.settings))
    return served


def _request_middleware_options(app: FastAPI) -> dict[str, Any]:
    settings = app.state.settings
    return {
        "max_bytes": settings.max_body_bytes,
        "timeout_s": settings.body_timeout_s,
        "in_flight": app.state.in_flight,
        "fast_path": fastpath.GenerateFastPath(lambda: app.state.service),
    }


def _cors_options(settings: Settings) -> dict[str, Any]:
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["*"],
        "expose_headers": EXPOSED_HEADERS,
    }
