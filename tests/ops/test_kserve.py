"""deploy/kserve/inferenceservice.yaml: a structural check of the KServe resources (CRDs, so no cluster and no
published schema to validate against offline) and of every fact it shares with the service: the port, the
probe paths, the settings it sets, the protocol and the image's user."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from app.main import create_app
from app.settings import Settings
from tests.builders.tools import REPO

MANIFEST = REPO / "deploy" / "kserve" / "inferenceservice.yaml"
QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti)?$")


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc is not None]
    return {doc["kind"]: doc for doc in docs}


@pytest.fixture(scope="module")
def container(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = documents["ServingRuntime"]["spec"]["containers"]
    return only


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def quantity(text: str) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores or bytes)."""
    assert QUANTITY.match(text), text
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.match(r"^([\d.]+)(\D*)$", text).groups()  # type: ignore[union-attr]
    return float(number) * units.get(unit, 1)


def test_the_resources_and_their_api_versions(documents: dict[str, dict[str, Any]]) -> None:
    assert set(documents) == {"ServingRuntime", "InferenceService"}
    assert documents["ServingRuntime"]["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert documents["InferenceService"]["apiVersion"] == "serving.kserve.io/v1beta1"
    for doc in documents.values():
        assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", doc["metadata"]["name"])


def test_the_inference_service_uses_the_runtime_with_protocol_v2(
    documents: dict[str, dict[str, Any]],
) -> None:
    runtime = documents["ServingRuntime"]
    predictor = documents["InferenceService"]["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2"
    assert "v2" in runtime["spec"]["protocolVersions"]
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert re.match(r"^(pvc|s3|gs|https?|hdfs|oci)://\S+$", model["storageUri"])
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["scaleMetric"] in {"cpu", "memory", "concurrency", "rps"}


def test_the_container_listens_where_the_probes_and_the_service_look(container: dict[str, Any]) -> None:
    assert container["name"] == "kserve-container"  # the name KServe requires of the predictor container
    env = env_of(container)
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["CVAE_PORT"]) and env["CVAE_HOST"] == "0.0.0.0"
    assert env["CVAE_REGISTRY"] == "/mnt/models"  # where KServe's storage initializer puts storageUri
    app_paths = create_app(Settings()).openapi()["paths"]
    probes = {
        kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    for probe in probes.values():
        assert "get" in app_paths[probe["path"]] and probe["port"] == port["containerPort"]


def test_every_setting_is_a_real_one(container: dict[str, Any]) -> None:
    fields = {f"CVAE_{name.upper()}" for name in Settings.model_fields}
    env = env_of(container)
    assert set(env) <= fields, set(env) - fields
    Settings(**{name.removeprefix("CVAE_").lower(): value for name, value in env.items()})  # valid values


def test_resources_are_bounded(documents: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    for resources in (
        container["resources"],
        documents["InferenceService"]["spec"]["predictor"]["model"]["resources"],
    ):
        for kind in ("cpu", "memory"):
            assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind])


def test_the_user_is_the_images_non_root_user(container: dict[str, Any]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+)", dockerfile, re.MULTILINE)[-1]
    assert container["securityContext"]["runAsUser"] == int(user)
    assert container["securityContext"]["runAsNonRoot"] is True
