"""AdmissionReview bodies shaped as the Kubernetes API server sends them (admission.k8s.io/v1,
kube-apiserver Admission reference: request uid, kind, resource, subResource, requestKind,
requestResource, requestSubResource, name, namespace, operation, userInfo, object, oldObject,
dryRun, options), and a small RFC 6902 applier for the mutating webhook's patches."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

RESOURCES = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
}


def container(name: str, image: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }


def pod_spec(
    containers: list[tuple[str, str]],
    init: list[tuple[str, str]] | None = None,
    ephemeral: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container(n, i) for n, i in containers],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
    }
    if init:
        spec["initContainers"] = [container(n, i) for n, i in init]
    if ephemeral:
        spec["ephemeralContainers"] = [
            {**container(n, i), "targetContainerName": containers[0][0]} for n, i in ephemeral
        ]
    return spec


def workload(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The object of ``kind`` with ``spec`` as its pod spec (where that kind keeps it)."""
    group, version, _ = RESOURCES[kind]
    api_version = f"{group}/{version}" if group else version
    meta = {"name": name, "namespace": namespace, "labels": {"app": name}}
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    selector = {"matchLabels": {"app": name}}
    body: dict[str, Any]
    if kind == "Pod":
        body = spec
    elif kind == "CronJob":
        body = {
            "schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": {**template, "spec": {**spec, "restartPolicy": "OnFailure"}}}},
        }
    elif kind == "Job":
        body = {"template": {**template, "spec": {**spec, "restartPolicy": "Never"}}}
    else:
        body = {"replicas": 2, "selector": selector, "template": template}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": body}


def review(
    obj: dict[str, Any],
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    sub_resource: str | None = None,
    dry_run: bool = False,
    uid: str | None = None,
) -> dict[str, Any]:
    kind = obj["kind"]
    group, version, resource = RESOURCES[kind]
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    req: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": obj["metadata"].get("name", ""),
        "namespace": obj["metadata"]["namespace"],
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:ci:deployer",
            "uid": "014fbff9a07c",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"],
        },
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
        },
    }
    if sub_resource:
        req["subResource"] = sub_resource
        req["requestSubResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def pod(name: str, namespace: str, *images: str, **kw: Any) -> dict[str, Any]:
    return review(workload("Pod", name, namespace, pod_spec([(f"c{i}", img) for i, img in enumerate(images)])), **kw)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(doc: Any, patch_b64: str) -> Any:
    """Apply an RFC 6902 patch (the ops a webhook may send: add, replace, remove, test)."""
    out = copy.deepcopy(doc)
    for op in json.loads(base64.b64decode(patch_b64)):
        *parents, last = [_unescape(t) for t in op["path"].split("/")[1:]]
        node = out
        for token in parents:
            node = node[int(token)] if isinstance(node, list) else node[token]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "replace":
            assert key in node if isinstance(node, dict) else 0 <= key < len(node), op  # must exist
            node[key] = op["value"]
        elif op["op"] == "add":
            if isinstance(node, list):
                node.append(op["value"]) if key == "-" else node.insert(key, op["value"])
            else:
                node[key] = op["value"]
        elif op["op"] == "remove":
            del node[key]
        elif op["op"] == "test":
            assert node[key] == op["value"]
        else:
            raise AssertionError(f"unexpected op {op['op']}")
    return out
