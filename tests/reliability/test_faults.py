"""Faults through the real server: broken checkpoints at startup and by the admin endpoints, model swaps
and SIGTERM under mixed load. Nothing in flight may fail; a broken version never replaces a good one.

(tests/model covers the checkpoint format and SIGKILL during training; tests/app/test_e2e_lifecycle.py a
small SIGTERM drain and tests/app/test_e2e_service.py a swap under /generate load. These add mixed load,
every kind of broken checkpoint, and matching what clients saw with what the server logged.)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from loadtest.server import ServerProcess, start_server
from model.registry import Registry
from tests.builders import figures
from tests.builders.checks import assert_clean_error, assert_log_has_no_traceback
from tests.builders.faults import plant
from tests.builders.load import MixedLoad, Outcome
from tests.builders.servers import AUTH

pytestmark = pytest.mark.timeout(180)

# What each damage must be reported as: the client learns what is wrong, not where the file lives.
REASONS = {
    "bit-flip": "corrupt or truncated",
    "truncated": "not a readable safetensors file",
    "no-weights": "no model.safetensors",
    "bad-metadata": "metadata.json",
    "pickle": "not a readable safetensors file",
}


def failed(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status != 200 or not o.valid]


@pytest.mark.parametrize("damage", ["truncated", "bit-flip"])
def test_a_broken_active_version_at_startup_leaves_a_clear_unready_server(
    trained_registry: Path, tmp_path: Path, damage: str
) -> None:
    shutil.copytree(trained_registry, tmp_path / "registry")
    registry = Registry(tmp_path / "registry")
    good = registry.active_version()
    assert good is not None
    registry.promote(plant(registry, good, damage))
    with (
        start_server(registry.root, ready=False, registry_poll_s=0.2) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        assert client.get("/healthz").status_code == 200  # alive, and says why it is not ready
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
        detail = assert_clean_error(ready)["detail"]
        assert "cannot be loaded" in detail and REASONS[damage] in detail
        generate = client.post("/generate", json={"text": "1"})
        assert generate.status_code == 503 and assert_clean_error(generate)["detail"] == detail
        registry.promote(good)  # the operator (or the training job) points at a good version again
        deadline = time.monotonic() + 10  # the registry poll picks it up
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/readyz").json()["model_version"] == good
        assert client.post("/generate", json={"text": "1"}).status_code == 200
        log = server.log()
    errors = [json.loads(line) for line in log.splitlines() if '"level": "error"' in line]
    assert any("cannot be loaded" in entry["msg"] for entry in errors)
    assert_log_has_no_traceback(log)
    figures.add("faults survived: broken active version at startup")


def test_broken_versions_are_refused_and_swaps_fail_nothing_under_mixed_load(
    faulty_server: ServerProcess, faulty_registry: Registry, broken: dict[str, str]
) -> None:
    good, other = faulty_registry.version_names()[:2]
    assert faulty_registry.active_version() == good
    refusals = swaps = 0
    with (
        httpx.Client(base_url=faulty_server.base_url, headers=AUTH, timeout=30) as admin,
        MixedLoad(faulty_server.base_url, clients=6, tag="swap") as load,
    ):
        for round_ in range(3):
            for damage, name in broken.items():
                for action in ("load", "promote"):
                    response = admin.post(f"/admin/models/{name}/{action}")
                    assert response.status_code == 422, (damage, action, response.text)
                    detail = assert_clean_error(response)["detail"]
                    assert "cannot be loaded" in detail and REASONS[damage] in detail, detail
                    refusals += 1
                assert faulty_registry.active_version() == (other if round_ % 2 else good)
            target = good if round_ % 2 else other  # a real swap, then broken promotions again
            swapped = admin.post(f"/admin/models/{target}/promote")
            assert swapped.status_code == 200 and swapped.json()["active"] == target
            swaps += 1
            time.sleep(0.3)
        restored = admin.post(f"/admin/models/{good}/promote")
        time.sleep(0.3)
    assert restored.status_code == 200 and faulty_registry.active_version() == good
    outcomes = load.outcomes
    assert len(outcomes) >= 50 and not failed(outcomes), failed(outcomes)[:5]
    assert {o.version for o in outcomes} == {good, other}  # both versions served, nothing else
    assert {o.endpoint for o in outcomes} == {"/generate", "/encode", "/reconstruct"}
    assert_log_has_no_traceback(faulty_server.log())
    figures.record("admin refusals of broken versions under load", refusals)
    figures.record("requests during swaps and refusals (all 200)", len(outcomes))
    figures.add("faults survived: broken version via admin", refusals)
    figures.add("faults survived: model swap under load", swaps + 1)  # and the restoring one


def test_sigterm_under_mixed_load_drains_in_flight_requests_and_exits_0(two_versions: Path) -> None:
    # A 50 ms batching wait keeps requests queued, so some are surely in flight when the signal lands.
    with start_server(two_versions, max_batch_wait_ms=50) as server:
        with MixedLoad(server.base_url, clients=8, tag="term") as load:
            time.sleep(1.5)
            signalled = time.perf_counter()
            server.process.terminate()  # SIGTERM
            code = server.process.wait(30)
            exited = time.perf_counter()
            load.stop()
        log = server.log()
    answered = [o for o in load.outcomes if o.status is not None]
    unanswered = [o for o in load.outcomes if o.status is None]
    in_flight = [o for o in answered if o.started < signalled < o.finished]
    assert code == 0 and exited - signalled < 15
    assert not failed(answered), failed(answered)[:5]  # every request that got an answer got a right one
    assert len(in_flight) >= 3, "no request was in flight at the signal; the test proves nothing"
    # Requests the app saw must have been answered; those that got no answer never reached it.
    access = {
        entry["request_id"]: entry["status"]
        for entry in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
        if entry["logger"] == "app.access" and entry["request_id"].startswith("term-")
    }
    assert set(access.values()) == {200}
    assert {o.request_id for o in answered} == set(access)
    assert not {o.request_id for o in unanswered} & set(access)
    assert "inference queue drained" in log
    assert_log_has_no_traceback(log)
    figures.record(
        "SIGTERM under load: answered / in flight at the signal / refused at connect",
        f"{len(answered)} / {len(in_flight)} / {len(unanswered)}",
    )
    figures.add("faults survived: SIGTERM under load")
