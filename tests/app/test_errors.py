"""Error mapping: every domain error to its status, bodies that always serialise, no leaks in 500s."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from app import imaging
from app.errors import domain_error_response, http_error_for, install_error_handlers
from app.exceptions import (
    InferenceTimeout,
    InvalidInput,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    redact,
)
from app.middleware import RequestMiddleware
from model.errors import CheckpointError, ModelError, RegistryError, RegistryReadOnly, VersionNotFoundError


@pytest.mark.parametrize(
    "exc,status,retry_after",
    [
        (imaging.ImageTooLarge("big"), 413, None),
        (imaging.UnsupportedImage("svg"), 415, None),
        (imaging.UnreadableImage("cut"), 422, None),
        (imaging.BlankImage("blank"), 422, None),
        (imaging.ImageError("other"), 422, None),
        (VersionNotFoundError("unknown model version 'v9'"), 404, None),
        (CheckpointError("bad"), 422, None),
        (RegistryError("no active version"), 503, "5"),
        (RegistryReadOnly("cannot write the active pointer"), 409, None),
        (NotReady("loading"), 503, "5"),
        (Overloaded("full"), 503, "1"),
        (InferenceTimeout("slow"), 503, "1"),
        (PayloadTooLarge("big"), 413, None),
        (InvalidInput("style"), 422, None),
        (ModelError("other"), 422, None),
    ],
)
def test_each_domain_error_has_its_status(exc: Exception, status: int, retry_after: str | None) -> None:
    mapped = http_error_for(exc)
    assert mapped is not None
    assert mapped[0] == status and mapped[2].get("Retry-After") == retry_after


def test_unknown_errors_are_not_mapped() -> None:
    assert http_error_for(KeyError("x")) is None


def test_redact_keeps_file_names_but_not_directories() -> None:
    text = "/srv/cvae/registry/v0002/model.safetensors is corrupt; see /tmp/x/metadata.json"
    assert redact(text) == "model.safetensors is corrupt; see metadata.json"
    assert redact("version v0002 of 5/10 ok") == "version v0002 of 5/10 ok"


class Body(BaseModel):
    value: float = Field(allow_inf_nan=False)


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(body: Body) -> dict[str, float]:
        return {"value": body.value}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret at /home/op/registry/v0001")

    @app.get("/full")
    async def full() -> None:
        raise Overloaded("queue full")

    app.add_middleware(RequestMiddleware, max_bytes=1024)
    return app


def _call(method: str, path: str, **kwargs: object) -> httpx.Response:
    async def body() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(body())


@pytest.mark.parametrize("raw", [b'{"value": NaN}', b'{"value": Infinity}', b'{"value": "x"}', b"{bad json"])
def test_validation_errors_never_echo_the_input(raw: bytes) -> None:
    response = _call("POST", "/echo", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    body = response.json()  # it parsed: the body serialised
    assert isinstance(body["detail"], list) and body["detail"][0]["loc"][0] == "body"
    assert "input" not in json.dumps(body) and body["request_id"] == response.headers["x-request-id"]


def test_unknown_errors_are_a_generic_500_without_paths() -> None:
    response = _call("GET", "/boom", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal server error; quote the request id when reporting it",
        "request_id": "abc-123",
    }
    assert response.headers["x-request-id"] == "abc-123"


def test_overload_is_503_with_retry_after() -> None:
    response = _call("GET", "/full")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["detail"] == "queue full"


@pytest.fixture
def app_records() -> Iterator[list[logging.LogRecord]]:
    """The records the `app` loggers write at INFO, while the test runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("app")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_refused_request_logs_one_access_line_with_the_reason(app_records: list[logging.LogRecord]) -> None:
    response = _call("GET", "/full")
    assert response.status_code == 503
    (line,) = app_records  # the access line only: no second line for the refusal
    assert line.name == "app.access" and line.getMessage() == "GET /full 503"
    assert (line.status, line.error, line.detail) == (503, "Overloaded", "queue full")  # type: ignore[attr-defined]


def test_a_refusal_outside_a_request_gets_a_line_of_its_own(app_records: list[logging.LogRecord]) -> None:
    response = domain_error_response(Overloaded("queue full"), "/generate")
    assert response is not None and response.status_code == 503
    (line,) = app_records
    assert line.name == "app.errors" and line.getMessage() == "request refused"
    assert (line.error, line.detail) == ("Overloaded", "queue full")  # type: ignore[attr-defined]


def test_unknown_routes_are_json_404() -> None:
    response = _call("GET", "/nope")
    assert response.status_code == 404 and response.json()["detail"] == "Not Found"


@pytest.mark.parametrize("given", ["bad id with spaces", "x" * 129, ""])
def test_unusable_request_ids_are_replaced(given: str) -> None:
    response = _call("GET", "/nope", headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] != given and len(response.headers["x-request-id"]) == 32


def test_the_body_limit_applies_to_declared_and_streamed_bodies() -> None:
    declared = _call("POST", "/echo", content=b"1" * 2000, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "1024 byte limit" in declared.json()["detail"]

    async def chunks():  # noqa: ANN202 - no Content-Length: counted while reading
        for _ in range(10):
            yield b"1" * 500

    streamed = _call("POST", "/echo", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["detail"].startswith("request body larger")
    small = _call("POST", "/echo", json={"value": 1.5})
    assert small.status_code == 200 and small.json() == {"value": 1.5}
