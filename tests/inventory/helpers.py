"""The kubectl-shaped fixture, with Hallmark's own registry host filled in for a test server."""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
HALLMARK_HOST = "registry.hallmark.test"  # placeholder for the server's host:port in the fixture


def D(c: str) -> str:
    return "sha256:" + c * 64


def kubectl_list(host: str = HALLMARK_HOST, name: str = "cluster-prod.json") -> dict[str, Any]:
    """``kubectl get pods,deployments,... -A -o json`` of a small production cluster (see the file)."""
    text = (FIXTURES / name).read_text().replace(HALLMARK_HOST, host)
    doc: dict[str, Any] = json.loads(text)
    return doc


def without(doc: dict[str, Any], *names: tuple[str, str]) -> dict[str, Any]:
    """A copy without the items named (kind, name), as after ``kubectl delete``."""
    out = copy.deepcopy(doc)
    out["items"] = [i for i in out["items"] if (i["kind"], i["metadata"]["name"]) not in names]
    return out


def bare_pod(name: str, image: str, image_id: str | None = None, ns: str = "default") -> dict[str, Any]:
    """A Pod as kubectl prints it, without an owner."""
    status: dict[str, Any] = {"phase": "Running" if image_id else "Pending", "qosClass": "BestEffort"}
    if image_id is not None:
        status["containerStatuses"] = [
            {
                "containerID": "containerd://" + "9" * 64,
                "image": image,
                "imageID": image_id,
                "lastState": {},
                "name": "main",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": "2026-12-05T08:00:12Z"}},
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "creationTimestamp": "2026-12-05T08:00:05Z",
            "labels": {"run": name},
            "name": name,
            "namespace": ns,
            "resourceVersion": "4711",
            "uid": f"b0b0b0b0-0000-4000-8000-{zlib.crc32(name.encode()):012d}",
        },
        "spec": {
            "containers": [{"image": image, "imagePullPolicy": "IfNotPresent", "name": "main", "resources": {}}],
            "restartPolicy": "Always",
        },
        "status": status,
    }


def as_list(*items: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "items": list(items), "kind": "List", "metadata": {"resourceVersion": ""}}
