"""The application factory: settings in, FastAPI app out (the model loads in the lifespan)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: routes, error mapping, middleware, the demo page when installed."""
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
    # Added innermost first: CORS (outermost, when configured) -> request middleware -> routes.
    app.add_middleware(
        RequestMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
        in_flight=app.state.in_flight,
        fast_path=fastpath.GenerateFastPath(lambda: app.state.service),
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
        )
    return app
