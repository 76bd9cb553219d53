"""deploy/kubernetes: both overlays render with ``kubectl kustomize`` and every object passes the
Kubernetes schema (tests/deploy/k8sschema.py), and the shapes hold what the issue asks for."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hallmark.config import load_config
from tests.conftest import ROOT
from tests.deploy.k8sschema import validate

OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
WORKLOADS = ("Deployment", "StatefulSet")


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found (Debian package kubernetes-client; make debs)"
    out = subprocess.run([kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(name) for name in ("embedded", "scaled")}


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def config_of(objs: list[dict[str, Any]], tmp_path: Path) -> Any:
    """The rendered ConfigMap's config.toml, loaded by Hallmark itself (unknown keys are errors there)."""
    (cm,) = of_kind(objs, "ConfigMap")
    path = tmp_path / "config.toml"
    path.write_text(cm["data"]["config.toml"])
    return load_config(path, {("data_dir",): str(tmp_path)}, environ={"HALLMARK_DATABASE_URL": "postgresql://x/y"})


@pytest.mark.parametrize("overlay", ["embedded", "scaled"])
def test_every_object_passes_the_schema(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objs = rendered[overlay]
    errors = [e for o in objs for e in validate(o)]
    assert errors == []
    assert {o["kind"] for o in objs} >= {"ConfigMap", "Service", "Ingress", "ServiceAccount"}
    assert all(o["metadata"].get("namespace") == "hallmark" for o in objs)


def test_the_schema_check_finds_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    api = copy.deepcopy(named(rendered["scaled"], "Deployment", "hallmark-api"))
    pod = api["spec"]["template"]["spec"]
    get = pod["containers"][0]["readinessProbe"]["httpGet"]
    get["paht"] = get.pop("path")
    pod["securityContext"]["runAsNonroot"] = True
    api["spec"]["replicas"] = "3"
    del pod["containers"][0]["name"]
    errors = validate(api)
    spec = "Deployment/hallmark-api.spec"
    pod_spec = f"{spec}.template.spec"
    assert f"{pod_spec}.containers[0].readinessProbe.httpGet.paht: unknown field of V1HTTPGetAction" in errors
    assert f"{pod_spec}.securityContext.runAsNonroot: unknown field of V1PodSecurityContext" in errors
    assert f"{spec}.replicas: expected an integer, got str '3'" in errors
    assert f"{pod_spec}.containers[0].name: required by V1Container" in errors
    assert len(errors) == 4
    ingress = copy.deepcopy(named(rendered["scaled"], "Ingress", "hallmark"))
    ingress["apiVersion"] = "extensions/v1beta1"  # removed in Kubernetes 1.22
    assert validate(ingress) == ["Ingress/hallmark: unknown kind 'Ingress' in 'extensions/v1beta1'"]


@pytest.mark.parametrize("overlay", ["embedded", "scaled"])
def test_pods_run_unprivileged(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    workloads = [o for o in rendered[overlay] if o["kind"] in WORKLOADS]
    assert workloads
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", "/var/lib/hallmark", "/etc/hallmark"} <= mounts  # the only writable paths


@pytest.mark.parametrize("overlay", ["embedded", "scaled"])
def test_references_resolve(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """Selectors select pods, probes name ports, volumes name the generated ConfigMap."""
    objs = rendered[overlay]
    pods = [(w["metadata"]["name"], w["spec"]["template"]) for w in objs if w["kind"] in WORKLOADS]
    configmaps = {o["metadata"]["name"] for o in of_kind(objs, "ConfigMap")}

    def selects(selector: dict[str, str]) -> list[str]:
        return [n for n, t in pods if selector.items() <= t["metadata"]["labels"].items()]

    (svc,) = of_kind(objs, "Service")
    assert selects(svc["spec"]["selector"]) == ["hallmark-api" if overlay == "scaled" else "hallmark"]
    for w in objs:
        if w["kind"] in WORKLOADS:
            assert selects(w["spec"]["selector"]["matchLabels"]) == [w["metadata"]["name"]]
            for v in w["spec"]["template"]["spec"]["volumes"]:
                if "configMap" in v:
                    assert v["configMap"]["name"] in configmaps
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        assert selects(pdb["spec"]["selector"]["matchLabels"]), pdb["metadata"]["name"]
    (ing,) = of_kind(objs, "Ingress")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == svc["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}


def test_embedded_is_one_pod_with_its_volume(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    objs = rendered["embedded"]
    assert of_kind(objs, "Deployment") == []
    (sts,) = of_kind(objs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (c,) = containers(sts)
    assert c["args"] == ["serve"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/var/lib/hallmark"} in c["volumeMounts"]
    assert env_of(c)["HALLMARK_DATA_DIR"]["value"] == "/var/lib/hallmark"
    assert "HALLMARK_DATABASE_URL" not in env_of(c)  # SQLite in the data folder
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    cfg = config_of(objs, tmp_path)
    assert cfg.storage.driver == "filesystem"
    assert cfg.pipeline.workers >= 1  # jobs run inside serve


def test_scaled_is_replicas_and_workers_on_shared_services(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    objs = rendered["scaled"]
    api = named(objs, "Deployment", "hallmark-api")
    worker = named(objs, "Deployment", "hallmark-worker")
    assert api["spec"]["replicas"] >= 2
    (a,) = containers(api)
    (w,) = containers(worker)
    assert a["args"][0] == "serve"
    assert w["args"][0] == "worker"
    assert a["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert a["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 5000, "protocol": "TCP"} in a["ports"]
    for c in (a, w):
        env = env_of(c)
        assert env["HALLMARK_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "hallmark-database", "key": "url"}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "hallmark-s3"
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "hallmark-s3"
        assert not any("value" in e and "secret" in e["name"].lower() for e in env.values())
    assert of_kind(objs, "StatefulSet") == []
    volumes = [v for d in (api, worker) for v in d["spec"]["template"]["spec"]["volumes"]]
    assert not any("persistentVolumeClaim" in v for v in volumes)  # no pod keeps state of its own
    assert {p["metadata"]["name"] for p in of_kind(objs, "PodDisruptionBudget")} == {"hallmark-api", "hallmark-worker"}
    cfg = config_of(objs, tmp_path)
    assert cfg.storage.driver == "s3" and cfg.storage.bucket
    assert cfg.storage.access_key is None  # from the Secret, through the AWS environment variables
    assert cfg.pipeline.workers == 0  # jobs go to the worker Deployment
