"""The real server's operational surface: health, models, metrics, request ids, admin, batching, swaps."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.builders.http import generate_concurrently
from tests.builders.images import digit_png
from tests.builders.metrics import scrape, value
from tests.builders.servers import ADMIN_TOKEN, AUTH

pytestmark = pytest.mark.timeout(180)


def test_healthz_and_readyz(http: httpx.Client, active_version: str) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_version": active_version, "device": "cpu"}


def test_models_lists_versions_with_metadata(
    http: httpx.Client, active_version: str, other_version: str
) -> None:
    body = http.get("/v1/models").json()
    assert (body["active"], body["serving"], body["device"]) == (active_version, active_version, "cpu")
    names = [v["name"] for v in body["versions"]]
    assert names == sorted([active_version, other_version])
    entry = next(v for v in body["versions"] if v["name"] == active_version)
    assert entry["active"] and entry["loaded"] and entry["error"] is None
    assert entry["metadata"]["config"]["latent_dim"] == 4 and "val_neg_elbo" in entry["metadata"]["metrics"]
    # the two facts a client needs are fields of the entry, typed, not buried in the metadata
    assert (
        entry["latent_dim"] == 4 and entry["default_temperature"] == entry["metadata"]["default_temperature"]
    )


def test_model_artifacts(http: httpx.Client, active_version: str) -> None:
    response = http.get(f"/v1/models/{active_version}/samples.png")
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    assert http.get(f"/v1/models/{active_version}/model.safetensors").status_code == 422  # not an artifact
    assert http.get("/v1/models/v9999/samples.png").status_code == 404


def test_request_id_is_echoed_or_generated(http: httpx.Client) -> None:
    assert http.get("/healthz", headers={"X-Request-ID": "req-42.a"}).headers["x-request-id"] == "req-42.a"
    generated = {http.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3
    error = http.post("/generate", json={"text": "x"}, headers={"X-Request-ID": "bad-one"})
    assert error.headers["x-request-id"] == "bad-one" and error.json()["request_id"] == "bad-one"


def test_openapi_documents_the_contract_with_examples(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert {"/generate", "/encode", "/reconstruct", "/healthz", "/readyz", "/v1/models", "/metrics"} <= set(
        spec["paths"]
    )
    examples = spec["components"]["schemas"]["GenerateRequest"]["examples"]
    assert examples[0]["text"] == "2026"
    generate = spec["paths"]["/generate"]["post"]
    assert {"200", "404", "413", "422", "503"} <= set(generate["responses"])
    assert "image/png" in generate["responses"]["200"]["content"]
    assert http.get("/docs").status_code == 200


def test_web_page_and_static_files(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert http.get("/static/index.html").status_code == 200
    assert http.get("/static/nope.js").status_code == 404


def test_metrics_move(http: httpx.Client, mnist) -> None:  # noqa: ANN001
    before = scrape(http)
    for _ in range(3):
        assert http.post("/generate", json={"text": "12 3", "samples": 2}).status_code == 200
    http.post("/generate", json={"text": "\u0663"})
    http.post("/encode", files={"file": ("d.png", digit_png(mnist[0][0]), "image/png")})
    after = scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cvae_requests_total", endpoint="/generate", status="200") == 3
    assert delta("cvae_requests_total", endpoint="/generate", status="422") == 1
    assert delta("cvae_request_duration_seconds_count", endpoint="/generate") == 4
    assert delta("cvae_digits_generated_total") == 3 * 2 * 3
    assert delta("cvae_batch_size_count", kind="decode") >= 1
    assert delta("cvae_queue_wait_seconds_count", kind="decode") == 3
    assert delta("cvae_compute_seconds_count", kind="encode") == 1
    assert delta("cvae_upload_recon_mse_count") == 1 and delta("cvae_upload_neg_elbo_nats_count") == 1
    assert value(after, "cvae_requests_in_flight") == 1  # the scrape itself
    assert value(after, "cvae_model_info", active="true", device="cpu") == 1


def test_concurrent_requests_are_batched(http: httpx.Client, server: str) -> None:
    before = scrape(http)
    responses = generate_concurrently(server, [{"text": "42", "seed": i} for i in range(48)])
    assert [r.status_code for r in responses] == [200] * 48
    after = scrape(http)
    batches = value(after, "cvae_batch_size_count", kind="decode") - value(
        before, "cvae_batch_size_count", kind="decode"
    )
    singles = value(after, "cvae_batch_size_bucket", kind="decode", le="1.0") - value(
        before, "cvae_batch_size_bucket", kind="decode", le="1.0"
    )
    assert batches < 48 and batches - singles >= 1  # at least one forward pass served several requests
    # and batching did not change any answer
    alone = [http.post("/generate", json={"text": "42", "seed": i}).content for i in (0, 17, 47)]
    assert alone == [responses[i].content for i in (0, 17, 47)]


def test_admin_requires_the_token(http: httpx.Client, active_version: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": "Basic x"},
    ):
        response = http.post(f"/admin/models/{active_version}/load", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"] == "missing or wrong admin token"


def test_admin_load_and_errors(http: httpx.Client, active_version: str, other_version: str) -> None:
    response = http.post(f"/admin/models/{other_version}/load", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "model_version": other_version,
        "active": active_version,
        "loaded": [active_version, other_version],
    }
    assert http.post("/admin/models/v0077/load", headers=AUTH).status_code == 404


def test_hot_swap_under_load_drops_nothing(
    http: httpx.Client, server: str, active_version: str, other_version: str
) -> None:
    stop = threading.Event()
    outcomes: list[tuple[int, str]] = []

    def client_loop() -> None:
        with httpx.Client(base_url=server, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/generate", json={"text": "7", "seed": 1})
                outcomes.append((r.status_code, r.headers.get("x-model-version", "")))

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for target in (other_version, active_version, other_version, active_version):
            time.sleep(0.3)
            response = http.post(f"/admin/models/{target}/promote", headers=AUTH)
            assert response.status_code == 200 and response.json()["active"] == target
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        http.post(f"/admin/models/{active_version}/promote", headers=AUTH)
    statuses = [s for s, _ in outcomes]
    assert len(statuses) > 20 and set(statuses) == {200}
    assert {v for _, v in outcomes} == {active_version, other_version}
    assert http.get("/readyz").json()["model_version"] == active_version
