"""Issue 14, registry and API rows, through the real server: versions whose config breaks the network,
unusable active pointers, oversized configs, long version names, symlinks out of the registry, a large
`/v1/models`, anonymous `version=` thrashing, concurrent promotions and repeated multipart parts.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.server import ServerProcess, start_server
from model.checkpoint import METADATA_FILE
from model.registry import ACTIVE_FILE, Registry
from tests.builders import figures
from tests.builders.checks import assert_clean_error, assert_log_has_no_traceback, vm_kib
from tests.builders.images import encode, paper_digit
from tests.builders.metrics import scrape, value
from tests.builders.models import add_perturbed_version, copy_registry
from tests.builders.servers import ADMIN_TOKEN, AUTH

pytestmark = pytest.mark.timeout(240)

SECRET = b"not a registry file: must never be served"
BAD_CONFIGS = {
    "image_pixels": {"image_pixels": -1000},
    "latent_dim": {"latent_dim": 1e13},
    "wide": {"encoder_hidden": [20000, 20000], "decoder_hidden": [20000, 20000]},
}


def plant_config(registry: Registry, source: str, change: dict) -> str:
    """A copy of `source` whose stored config is changed (the weights and their digest untouched)."""
    name = registry.next_version_name()
    shutil.copytree(registry.path(source), registry.root / name)
    metadata = json.loads((registry.root / name / METADATA_FILE).read_text())
    metadata["config"].update(change)
    (registry.root / name / METADATA_FILE).write_text(json.dumps(metadata))
    return name


@pytest.fixture(scope="module")
def hostile_registry(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """v0001 active, v0002 and v0003 valid, one version per bad config, a version directory symlinked
    outside the registry and v0002's samples.png symlinked to a file outside it. Returns role -> name."""
    base = tmp_path_factory.mktemp("hostile")
    registry = copy_registry(trained_registry, base / "registry")
    active = registry.active_version()
    assert active is not None
    names = {"active": active, "other": registry.version_names()[1]}
    names["third"] = add_perturbed_version(registry, active)
    for role, change in BAD_CONFIGS.items():
        names[role] = plant_config(registry, active, change)
    outside = base / "outside"
    shutil.copytree(registry.path(active), outside)
    (outside / "samples.png").write_bytes(SECRET)
    (base / "secret.png").write_bytes(SECRET)
    names["symlinked"] = registry.next_version_name()
    (registry.root / names["symlinked"]).symlink_to(outside, target_is_directory=True)
    samples = registry.path(names["other"]) / "samples.png"
    samples.unlink()
    samples.symlink_to(base / "secret.png")
    names["root"] = str(registry.root)
    return names


@pytest.fixture(scope="module")
def server(hostile_registry: dict[str, str]) -> Iterator[ServerProcess]:
    root = Path(hostile_registry["root"])
    with start_server(root, admin_token=ADMIN_TOKEN, registry_poll_s=0.5) as started:
        yield started


def pointer(names: dict[str, str]) -> Path:
    return Path(names["root"]) / ACTIVE_FILE


def set_pointer(names: dict[str, str], content: bytes) -> None:
    """Replace the active pointer file atomically with `content`."""
    tmp = pointer(names).with_name(".active-test")
    tmp.write_bytes(content)
    os.replace(tmp, pointer(names))


# -- row: `version=` alternating between two non-active versions, anonymous ----------------------------
def test_anonymous_version_requests_cannot_thrash_the_pool(
    server: ServerProcess, hostile_registry: dict
) -> None:
    statuses: list[int] = []
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        started = time.perf_counter()
        for i in range(40):
            version = hostile_registry["other" if i % 2 else "third"]
            response = client.post("/generate", params={"version": version}, json={"text": "1", "seed": i})
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.headers["retry-after"] and "versions a minute" in response.json()["detail"]
        seconds = time.perf_counter() - started
    loads = sum(v for (name, _), v in scrape(server.base_url).items() if name == "cvae_model_loads_total")
    figures.record(
        "40 anonymous version= requests alternating two non-active versions: 200, 503, loads, s",
        (statuses.count(200), statuses.count(503), loads, round(seconds, 2)),
    )
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 10  # the loaded one still answers
    assert loads <= 1 + 8  # the active version at start-up + the budget (6 a minute, a little refill)
    # the admin may still load any version at once
    loaded = httpx.post(f"{server.base_url}/admin/models/{hostile_registry['third']}/load", headers=AUTH)
    assert loaded.status_code == 200


# -- rows: configs that break the network constructor, and a 20,000-wide one ------------------------
@pytest.mark.parametrize("role", list(BAD_CONFIGS))
def test_bad_configs_are_refused_with_422_quickly_and_cheaply(
    server: ServerProcess, hostile_registry: dict, role: str
) -> None:
    name = hostile_registry[role]
    rss_before = vm_kib(server.process.pid, "VmRSS")
    for action in ("load", "promote"):
        started = time.perf_counter()
        response = httpx.post(f"{server.base_url}/admin/models/{name}/{action}", headers=AUTH, timeout=60)
        seconds = time.perf_counter() - started
        figures.record(
            f"bad config {role}: admin {action} status, s", (response.status_code, round(seconds, 3))
        )
        assert response.status_code == 422 and "cannot be loaded" in assert_clean_error(response)["detail"]
        assert seconds < 2.0  # the 20,000-wide config took 10.9 s and 3.2 GB before
    growth_mb = (vm_kib(server.process.pid, "VmRSS") - rss_before) / 1024
    figures.record(f"bad config {role}: server RSS growth MB", round(growth_mb, 1))
    assert growth_mb < 50
    assert Registry(hostile_registry["root"]).active_version() == hostile_registry["active"]
    assert value(scrape(server.base_url), "cvae_model_load_failures_total", version=name) >= 2
    assert_log_has_no_traceback(server.log())


# -- rows: an active pointer that names a broken version, holds non-UTF-8 bytes, or is a directory ------
def test_unusable_active_pointers_leave_the_loaded_version_serving(
    server: ServerProcess, hostile_registry: dict
) -> None:
    active = hostile_registry["active"]
    png = encode(paper_digit())
    faults = {
        "names the latent_dim 1e13 version": lambda: set_pointer(
            hostile_registry, hostile_registry["latent_dim"].encode() + b"\n"
        ),
        "names the image_pixels -1000 version": lambda: set_pointer(
            hostile_registry, hostile_registry["image_pixels"].encode() + b"\n"
        ),
        "non-UTF-8 bytes": lambda: set_pointer(hostile_registry, b"\xff\xfe\x00v0001\x80\n"),
        "a directory": lambda: (pointer(hostile_registry).unlink(), pointer(hostile_registry).mkdir()),
    }
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for fault, apply in faults.items():
            log_before = len(server.log())
            apply()
            deadline = time.perf_counter() + 15
            while '"level": "error"' not in server.log()[log_before:] and time.perf_counter() < deadline:
                client.get("/v1/models")  # reads the pointer too; the registry poll does within 0.5 s
                time.sleep(0.2)
            answers = []
            for i in range(10):  # every request: the loaded version, no retry of the load
                ready = client.get("/readyz")
                generated = client.post("/generate", json={"text": "42", "seed": i})
                encoded = client.post("/encode", files={"file": ("d.png", png, "image/png")})
                listing = client.get("/v1/models")
                answers += [
                    ready.status_code,
                    generated.status_code,
                    encoded.status_code,
                    listing.status_code,
                ]
                assert (
                    ready.json()["model_version"] == active and generated.headers["x-model-version"] == active
                )
            figures.record(f"active pointer {fault}: statuses of 40 requests", sorted(set(answers)))
            assert set(answers) == {200}, fault
            new_log = server.log()[log_before:]
            error_lines = [line for line in new_log.splitlines() if '"level": "error"' in line]
            assert len(error_lines) == 1, (fault, error_lines)  # logged once, not once per request
            if pointer(hostile_registry).is_dir():
                pointer(hostile_registry).rmdir()
            Registry(hostile_registry["root"]).promote(active)
            assert client.get("/readyz").json()["model_version"] == active
    metrics = scrape(server.base_url)
    assert value(metrics, "cvae_model_load_failures_total", version="(active pointer)") >= 2
    assert_log_has_no_traceback(server.log())


# -- row: a 301-character version name ----------------------------------------------------------------
def test_long_and_odd_version_names_get_404_without_a_traceback(server: ServerProcess) -> None:
    names = ["v" + "1" * 300, "v" + "9" * 20, "v٠٠٠١", "x" * 301]
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for name in names:
            for response in (
                client.get(f"/v1/models/{name}/samples.png"),
                client.post(f"/admin/models/{name}/load", headers=AUTH),
                client.post(f"/admin/models/{name}/promote", headers=AUTH),
            ):
                assert response.status_code == 404, (name, response.status_code)
                assert_clean_error(response)
                figures.add("odd version names answered 404")
    assert_log_has_no_traceback(server.log())


# -- row: a version directory or samples.png symlinked outside the registry ---------------------------
def test_nothing_outside_the_registry_is_served(server: ServerProcess, hostile_registry: dict) -> None:
    symlinked, other = hostile_registry["symlinked"], hostile_registry["other"]
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for path in (f"/v1/models/{symlinked}/samples.png", f"/v1/models/{other}/samples.png"):
            response = client.get(path)
            assert response.status_code == 404 and SECRET not in response.content, path
        assert client.post("/generate", params={"version": symlinked}, json={"text": "1"}).status_code == 404
        assert client.post(f"/admin/models/{symlinked}/load", headers=AUTH).status_code == 404
        listed = [v["name"] for v in client.get("/v1/models", params={"limit": 200}).json()["versions"]]
        assert symlinked not in listed and other in listed
        figures.record("symlinked version directory and samples.png: statuses", [404, 404])


# -- row: the `file` part repeated 100 times -------------------------------------------------------------
def test_repeated_form_fields_are_refused(server: ServerProcess) -> None:
    png = encode(paper_digit())
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for route in ("/encode", "/reconstruct"):
            files = [("file", (f"d{i}.png", png, "image/png")) for i in range(100)]
            response = client.post(route, files=files)
            assert response.status_code == 422 and "file" in assert_clean_error(response)["detail"]
            twice = client.post(
                route, files={"file": ("d.png", png, "image/png")}, data={"label": ["1", "2"]}
            )
            assert twice.status_code == 422 and "label" in twice.json()["detail"]
            assert client.post(route, files={"file": ("d.png", png, "image/png")}).status_code == 200
    figures.record("file part repeated 100 times: status", 422)


# -- row: two promotions at once ---------------------------------------------------------------------------
def test_concurrent_promotions_agree_on_one_active_version(
    server: ServerProcess, hostile_registry: dict
) -> None:
    versions = (hostile_registry["active"], hostile_registry["other"])
    disagreements = 0
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for version in versions:  # both loaded, so a round is only the race
            assert client.post(f"/admin/models/{version}/load", headers=AUTH).status_code == 200
        barrier = threading.Barrier(2)

        def promote(version: str) -> httpx.Response:
            barrier.wait()
            return client.post(f"/admin/models/{version}/promote", headers=AUTH)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for round_ in range(20):
                order = versions if round_ % 2 else versions[::-1]
                answers = list(pool.map(promote, order))
                assert [a.status_code for a in answers] == [200, 200]
                actives = [a.json()["active"] for a in answers]
                on_disk = pointer(hostile_registry).read_text().strip()
                served = client.get("/readyz").json()["model_version"]
                # The pointer and the served version always agree, and one answer names them. Both
                # answers name it when the two promotions overlapped on the server (the usual case); one
                # that finished before the other arrived names the state at its time.
                assert served == on_disk and on_disk in actives, (actives, on_disk, served)
                disagreements += len(set(actives)) != 1
        Registry(hostile_registry["root"]).promote(versions[0])  # picked up by the registry poll
        deadline = time.perf_counter() + 10
        while client.get("/readyz").json()["model_version"] != versions[0]:
            assert time.perf_counter() < deadline
            time.sleep(0.1)
    figures.record(
        "20 rounds of two simultaneous promotions: rounds whose answers named different versions",
        disagreements,
    )
    assert disagreements <= 2


# -- row: /v1/models with 213 versions -------------------------------------------------------------------
def test_models_listing_is_small_cached_and_does_not_slow_others(many_versions: Path) -> None:
    with start_server(many_versions) as server, httpx.Client(base_url=server.base_url, timeout=60) as client:
        first = client.get("/v1/models")
        body = first.json()
        assert body["total"] == 213 and len(body["versions"]) == 50
        assert all("history" not in (v["metadata"] or {}) for v in body["versions"])
        full = client.get("/v1/models", params={"full": "true", "limit": 1, "offset": 5})
        assert len(full.json()["versions"][0]["metadata"]["history"]) == 150
        last = client.get("/v1/models", params={"offset": 200, "limit": 50}).json()["versions"]
        assert [v["name"] for v in last][-1] == "v0213" and len(last) == 13
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            client.get("/v1/models")
            timings.append(time.perf_counter() - started)
        # 4 pollers on /v1/models while a probe checks /healthz
        stop = threading.Event()
        polled: list[int] = []  # statuses (-1: no answer), asserted below: a thread's assert fails nothing

        def poll() -> None:
            with httpx.Client(base_url=server.base_url, timeout=60) as poller:
                while not stop.is_set():
                    try:
                        polled.append(poller.get("/v1/models").status_code)
                    except httpx.HTTPError:
                        polled.append(-1)

        threads = [threading.Thread(target=poll) for _ in range(4)]
        for thread in threads:
            thread.start()
        probes = []
        try:
            for _ in range(20):
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                probes.append(time.perf_counter() - started)
                time.sleep(0.1)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert polled and set(polled) == {200}
        # a new version is listed at once (the cache is invalidated by the registry's change)
        registry = Registry(many_versions)
        name = registry.next_version_name()
        shutil.copytree(many_versions / "v0213", many_versions / name)
        try:
            assert client.get("/v1/models").json()["total"] == 214
        finally:
            shutil.rmtree(many_versions / name)
        assert client.get("/v1/models").json()["total"] == 213
    figures.record(
        "/v1/models, 213 versions: bytes, median s; health probe under 4 pollers: median, slowest s",
        (
            len(first.content),
            round(sorted(timings)[10], 4),
            round(sorted(probes)[10], 4),
            round(max(probes), 4),
        ),
    )
    assert len(first.content) < 150_000  # 8.8 MB before
    assert max(probes) < 1.0  # 2.4 s before
