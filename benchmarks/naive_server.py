"""The benchmark's baseline: the /generate contract served naively, one forward pass per request.

What a first implementation typically looks like: a synchronous FastAPI endpoint (run in the
framework's thread pool), the model called once per request with torch's default threading, no
queue and no batching. It shares the request schema, the noise plan and the PNG encoder with the
real service, so both answer the same contract, on the same device (DEVICE: auto, cpu, cuda...; the
benchmark passes the project's). Run: `python -m benchmarks.naive_server REGISTRY PORT [DEVICE]`.
"""

from __future__ import annotations

import secrets
import sys
import time
from contextlib import asynccontextmanager

import torch
import uvicorn
from fastapi import FastAPI, Response

from app.engine import Engine
from app.imaging import to_png
from app.inference import paint, plan_generation
from app.schemas import GenerateRequest
from model.device import resolve_device
from model.registry import Registry

MODEL: dict[str, Engine] = {}


def build_app(registry: str, device: str = "cpu") -> FastAPI:
    """The naive app over the active version of `registry`, on `device`."""
    on = resolve_device(device)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        reg = Registry(registry)
        name = reg.resolve(None)
        MODEL["engine"] = Engine(name, reg.load(name, on), on)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/generate")
    def generate_digits(body: GenerateRequest) -> Response:
        started = time.perf_counter()
        engine = MODEL["engine"]
        seed = secrets.randbits(63) if body.seed is None else body.seed
        temperature = engine.default_temperature if body.temperature is None else body.temperature
        plan = plan_generation(body.text, body.samples, seed, temperature, body.style, engine.latent_dim)
        with torch.inference_mode():
            # one forward pass for this request alone
            probs = engine.model.decode(plan.z.to(on), plan.y.to(on)).cpu()
        png = to_png(paint(plan, probs), scale=body.scale, invert=body.invert)
        spent = (time.perf_counter() - started) * 1000
        headers = {"X-Model-Version": engine.version, "X-Seed": str(seed), "X-Inference-Ms": f"{spent:.3f}"}
        return Response(png, media_type="image/png", headers=headers)

    @app.get("/readyz")
    def get_ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.naive_server REGISTRY PORT [DEVICE]`."""
    registry, port, *device = argv if argv is not None else sys.argv[1:]
    app = build_app(registry, *device[:1])
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
