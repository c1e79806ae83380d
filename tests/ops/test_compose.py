"""docker-compose.yml (validated by the Compose v2 binary) and the commands its services run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model.registry import Registry
from model.shipped import PRETRAINED_DIR
from tests.builders.tools import REPO, compose_binary
from training import cli as training_cli

COMPOSE_FILE = REPO / "docker-compose.yml"
ALL_PROFILES = ["--profile", "gpu", "--profile", "load", "--profile", "train"]


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_binary(), "-f", str(file), *args],
        capture_output=True,
        text=True,
        cwd=file.parent,
        timeout=120,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    result = compose(*ALL_PROFILES, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)["services"])


@pytest.mark.parametrize("profiles", [[], ["--profile", "gpu"], ["--profile", "train"], ALL_PROFILES])
def test_compose_config_is_valid(profiles: list[str]) -> None:
    result = compose(*profiles, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_binary_really_validates(tmp_path: Path) -> None:
    """Control: the binary exits non-zero on an invalid file (the Python wrapper would say 0)."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(
        "services:\n  api:\n    image: x\n    depends_on:\n      ghost:\n        condition: service_healthy\n"
    )
    assert compose("config", "-q", file=bad).returncode != 0


def test_services_of_the_stack(services: dict[str, Any]) -> None:
    profiled = {"trainer", "api-gpu", "loadtest"}
    assert set(services) == {"seed", "api", "haproxy", "prometheus", "grafana"} | profiled
    assert services["seed"]["command"] == ["python", "-m", "model.shipped", "--registry", "/data/registry"]
    assert services["seed"]["image"] == services["api"]["image"] and services["seed"]["restart"] == "no"
    for api in ("api", "api-gpu"):
        assert set(services[api]["depends_on"]) == {"seed"}
        assert services[api]["depends_on"]["seed"]["condition"] == "service_completed_successfully"
    assert services["api"]["command"] == ["python", "-m", "app"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("seed", "trainer", "api"):  # they share the registry volume
        assert {v["source"]: v["target"] for v in services[name]["volumes"]} == {"registry": "/data/registry"}


def test_the_trainer_trains_a_new_version_on_demand_only(services: dict[str, Any]) -> None:
    trainer = services["trainer"]
    assert trainer["profiles"] == ["train"]  # `docker compose up` does not train
    assert trainer["command"][:3] == ["python", "-m", "training"]
    assert "--if-empty" not in trainer["command"] and "--no-promote" not in trainer["command"]
    config = training_cli.config_from_args(training_cli.build_parser().parse_args(trainer["command"][3:]))
    assert config.promote and config.preset == "default"  # the new version is made active
    assert trainer["image"] == services["api"]["image"]
    default = compose("config", "--services")
    assert default.returncode == 0, default.stderr
    assert "trainer" not in default.stdout.split() and "seed" in default.stdout.split()


def test_gpu_profile_reserves_an_nvidia_device(services: dict[str, Any]) -> None:
    gpu = services["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["CVAE_DEVICE"] == "cuda"


def test_loadtest_profile_runs_locust_against_api(services: dict[str, Any]) -> None:
    loadtest = services["loadtest"]
    assert loadtest["profiles"] == ["load"]
    assert loadtest["build"]["target"] == "loadtest"
    assert loadtest["command"][:3] == ["python", "-m", "loadtest"]
    assert "--target=http://haproxy:8000" in loadtest["command"]
    assert loadtest["depends_on"]["haproxy"]["condition"] == "service_started"


def test_api_scales_behind_haproxy_with_the_repository_config(services: dict[str, Any]) -> None:
    api, haproxy = services["api"], services["haproxy"]
    assert "ports" not in api, "a published api port would stop `--scale api=3`"
    assert {p["published"] for p in haproxy["ports"]} >= {"8000"}
    mounts = {v.get("target"): v.get("source") for v in haproxy["volumes"]}
    assert mounts["/usr/local/etc/haproxy/haproxy.cfg"] == str(REPO / "deploy" / "haproxy" / "haproxy.cfg")
    assert haproxy["depends_on"]["api"]["condition"] == "service_healthy"
    assert float(api["environment"]["CVAE_DRAIN_DELAY_S"]) >= 1.0  # > haproxy's 2 x 500 ms checks
    assert float(api["environment"]["CVAE_REGISTRY_POLL_S"]) > 0


def run_module(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def seed_command(services: dict[str, Any], registry: Path) -> list[str]:
    """The seed service's command, run here with `registry` in place of the volume."""
    command = services["seed"]["command"]
    assert command[:2] == ["python", "-m"]
    return [str(registry) if part == "/data/registry" else part for part in command[2:]]


def test_seed_command_runs_outside_the_container(tmp_path: Path, services: dict[str, Any]) -> None:
    registry = tmp_path / "registry"
    result = run_module(*seed_command(services, registry))
    assert result.returncode == 0, result.stderr
    assert Registry(registry).version_names() == ["v0001"]
    assert Registry(registry).active_version() == "v0001"
    shipped = (PRETRAINED_DIR / "model.safetensors").read_bytes()
    assert (registry / "v0001" / "model.safetensors").read_bytes() == shipped


def test_seed_command_leaves_a_registry_with_versions_alone(
    trained_registry: Path, tmp_path: Path, services: dict[str, Any]
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(trained_registry, registry)
    before = sorted(str(p.relative_to(registry)) for p in registry.rglob("*"))
    active = Registry(registry).active_version()
    result = run_module(*seed_command(services, registry))
    assert result.returncode == 0, result.stderr
    assert "already has versions" in result.stdout
    assert sorted(str(p.relative_to(registry)) for p in registry.rglob("*")) == before
    assert Registry(registry).active_version() == active


@pytest.mark.parametrize("module", ["app", "loadtest", "training", "model", "model.shipped"])
def test_container_entry_points_answer_help(module: str) -> None:
    result = run_module(module, "--help")
    assert result.returncode == 0, result.stderr
