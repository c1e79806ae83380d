"""Security through the real server: the admin guard, code execution through checkpoints, CORS, leaks in
error bodies, and the container's user."""

from __future__ import annotations

import asyncio
import hmac
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from app.api import deps
from app.main import create_app
from app.settings import Settings
from loadtest.server import ServerProcess, start_server
from model.registry import Registry
from tests.builders import figures
from tests.builders.checks import assert_clean_error
from tests.builders.faults import marker_path
from tests.builders.servers import ADMIN_TOKEN, AUTH

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "https://demo.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}
WRONG_AUTHORIZATIONS = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": ADMIN_TOKEN},  # no scheme
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},  # a prefix
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},  # the token plus more
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}X"},  # same length, last character wrong
    {"Authorization": f"Bearer {ADMIN_TOKEN.upper()}"},
    {"X-Admin-Token": ADMIN_TOKEN},
]


@pytest.fixture(scope="module")
def cors_server(two_versions: Path) -> Iterator[ServerProcess]:
    """CORS configured for one origin; the admin token set but empty, which means admin off."""
    with start_server(two_versions, cors_origins=ORIGIN, admin_token="") as server:
        yield server


# -- the admin guard -------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["load", "promote"])
def test_admin_refuses_every_missing_or_wrong_token(main_server: ServerProcess, action: str) -> None:
    active = httpx.get(main_server.base_url + "/readyz").json()["model_version"]
    with httpx.Client(base_url=main_server.base_url) as client:
        for headers in WRONG_AUTHORIZATIONS:
            for params in ({}, {"token": ADMIN_TOKEN}):  # a token in the query is not a credential
                response = client.post(f"/admin/models/{active}/{action}", headers=headers, params=params)
                assert response.status_code == 401, (headers, params)
                assert response.headers["www-authenticate"] == "Bearer"
                assert ADMIN_TOKEN not in response.text and assert_clean_error(response)
                figures.add("admin calls refused for a missing or wrong token")
        response = client.post(f"/admin/models/{active}/{action}", headers=AUTH)
        assert response.status_code == 200 and response.json()["active"] == active


def test_admin_does_not_exist_when_the_token_is_empty(cors_server: ServerProcess) -> None:
    with httpx.Client(base_url=cors_server.base_url) as client:
        for action in ("load", "promote"):
            for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
                response = client.post(f"/admin/models/v0001/{action}", headers=headers)
                assert response.status_code == 404 and assert_clean_error(response)["detail"] == "Not Found"
        assert not [path for path in client.get("/openapi.json").json()["paths"] if path.startswith("/admin")]


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check goes through hmac.compare_digest, whatever the length or prefix of the guess."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        calls.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    settings = Settings(registry=Path("unused"), admin_token=ADMIN_TOKEN)
    app = create_app(settings)
    app.state.service = SimpleNamespace(settings=settings)  # the guard needs only the settings

    async def guesses() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses = []
            for guess in ("x", ADMIN_TOKEN[:-1], ADMIN_TOKEN[:-1] + "X", ADMIN_TOKEN + "x"):
                response = await client.post(
                    "/admin/models/v0001/load", headers={"Authorization": f"Bearer {guess}"}
                )
                statuses.append(response.status_code)
            return statuses

    assert asyncio.run(guesses()) == [401] * 4
    assert [given for given, _ in calls] == [
        g.encode() for g in ("x", ADMIN_TOKEN[:-1], ADMIN_TOKEN[:-1] + "X", ADMIN_TOKEN + "x")
    ]
    assert {expected for _, expected in calls} == {ADMIN_TOKEN.encode()}
    source = inspect.getsource(deps.require_admin)
    assert not re.search(r"(==|!=|startswith|endswith)\s*\(?\s*expected|expected\s*(==|!=)", source)


# -- checkpoints never run code ---------------------------------------------------------------------
def test_a_planted_pickle_is_refused_through_the_api_and_never_runs(
    faulty_server: ServerProcess, faulty_registry: Registry, broken: dict[str, str]
) -> None:
    planted = broken["pickle"]
    marker = marker_path(faulty_registry)
    active = faulty_registry.active_version()
    with httpx.Client(base_url=faulty_server.base_url, headers=AUTH, timeout=30) as client:
        for action in ("load", "promote"):
            response = client.post(f"/admin/models/{planted}/{action}")
            assert response.status_code == 422
            assert "not a readable safetensors file" in assert_clean_error(response)["detail"]
        pinned = client.post("/generate", params={"version": planted}, json={"text": "1"})
        assert pinned.status_code == 422 and assert_clean_error(pinned)
        assert client.post("/generate", json={"text": "1"}).headers["x-model-version"] == active
    assert not marker.exists(), "the planted pickle was unpickled: code ran"
    assert faulty_registry.active_version() == active


def test_no_code_path_can_unpickle() -> None:
    """The service and the model package load weights with safetensors only: no pickle, no torch.load."""
    forbidden = re.compile(r"torch\.load\(|import pickle|pickle\.loads?\(|weights_only\s*=\s*False|joblib")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in ("app", "model")
        for path in sorted((REPO / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert not offenders, offenders


# -- CORS --------------------------------------------------------------------------------------------
def test_cors_is_off_unless_configured(main_server: ServerProcess) -> None:
    with httpx.Client(base_url=main_server.base_url) as client:
        preflight = client.options("/generate", headers=PREFLIGHT)
        simple = client.post("/generate", json={"text": "1"}, headers={"Origin": ORIGIN})
    assert simple.status_code == 200
    for response in (preflight, simple):
        assert not [h for h in response.headers if h.startswith("access-control-")], response.headers


def test_cors_allows_only_the_configured_origin(cors_server: ServerProcess) -> None:
    with httpx.Client(base_url=cors_server.base_url) as client:
        preflight = client.options("/generate", headers=PREFLIGHT)
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        simple = client.post("/generate", json={"text": "1"}, headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        exposed = simple.headers["access-control-expose-headers"].lower()
        assert {"x-seed", "x-model-version", "x-request-id", "retry-after"} <= {
            h.strip() for h in exposed.split(",")
        }
        other = {**PREFLIGHT, "Origin": "https://evil.example"}
        assert "access-control-allow-origin" not in client.options("/generate", headers=other).headers
        stranger = client.post("/generate", json={"text": "1"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers


# -- no traces or paths in error bodies -------------------------------------------------------------
def test_every_kind_of_error_body_is_clean(
    main_server: ServerProcess, faulty_server: ServerProcess, broken: dict[str, str]
) -> None:
    """One of each error class (the other tests scan theirs as they go)."""
    with httpx.Client(base_url=main_server.base_url, timeout=30) as client:
        responses = [
            client.get("/no/such/route"),
            client.put("/generate", json={"text": "1"}),
            client.post("/generate", json={"text": "x"}),
            client.post("/generate", json={"text": "1"}, params={"version": "v0999"}),
            client.post("/generate", json={"text": "1"}, params={"format": "gif"}),
            client.post(
                "/generate", content=b'{"text": "\xff"}', headers={"content-type": "application/json"}
            ),
            client.post("/encode", files={"file": ("d.txt", b"text", "text/plain")}),
            client.post("/encode", files={"file": ("d.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png")}),
            client.post("/encode", content=bytes(6_000_000), headers={"content-type": "image/png"}),
            client.post("/admin/models/v0001/load"),
            client.get("/v1/models/v0999/samples.png"),
        ]
    with httpx.Client(base_url=faulty_server.base_url, headers=AUTH, timeout=30) as client:
        responses += [client.post(f"/admin/models/{name}/promote") for name in broken.values()]
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [400, 401, 404, 405, 413, 415, 422], statuses
    for response in responses:
        assert_clean_error(response)
    listing = httpx.get(faulty_server.base_url + "/v1/models").text  # the per-version errors it shows
    assert '"error":"' in listing and "/tmp" not in listing and "Traceback" not in listing


# -- the container ----------------------------------------------------------------------------------
def test_the_image_runs_as_a_non_root_user() -> None:
    text = (REPO / "Dockerfile").read_text()
    steps = [
        line.split(None, 1)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    last_from = max(i for i, step in enumerate(steps) if step[0].upper() == "FROM")
    users = [step[1].split(":")[0].strip() for step in steps[last_from:] if step[0].upper() == "USER"]
    assert users, "the final stage (the default build target) sets no USER: it would run as root"
    user = users[-1]  # the one the container runs as
    assert user not in ("root", "0"), user
    created = re.search(r"useradd[^&]*--uid\s+(\d+)", text)
    assert created and user in (created.group(1), "cvae"), "the USER is not the account the image creates"
