"""Kubernetes ``AdmissionReview`` v1 in and out: the request's containers, and well-formed answers.

The API server sends ``{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
"request": {...}}`` and needs back the same ``apiVersion``/``kind`` with ``response.uid``
equal to ``request.uid``. Anything else (not JSON, another version, no uid, a kind without a
pod template) raises :class:`BadReview`; the caller answers it by the failure policy, so a
malformed request is never allowed by accident and never a server error.

Where the pod spec sits, per kind (``group/kind``), as JSON pointer segments:

- ``Pod``: ``/spec`` (and the ``pods/ephemeralcontainers`` subresource, whose object is the Pod;
  clusters before 1.22 send kind ``EphemeralContainers`` with the list at the top level)
- ``apps/Deployment|ReplicaSet|StatefulSet|DaemonSet``, ``batch/Job``: ``/spec/template/spec``
- ``batch/CronJob``: ``/spec/jobTemplate/spec/template/spec``
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
CONTAINER_LISTS = (("containers", "container"), ("initContainers", "init"), ("ephemeralContainers", "ephemeral"))
SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec",),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
    ("", "EphemeralContainers"): (),  # pods/ephemeralcontainers before Kubernetes 1.22
}
MAX_CONTAINERS = 1000  # per list; a pod allows far fewer, so more is an attack or a mistake


class BadReview(ValueError):
    """The body is not an AdmissionReview this webhook can evaluate; ``uid`` is echoed when known."""

    def __init__(self, message: str, uid: str = "") -> None:
        super().__init__(message)
        self.uid = uid


@dataclass(frozen=True)
class Container:
    """One container of the object: its name, list (container | init | ephemeral), image as
    written, and the JSON pointer of that image for a patch."""

    name: str
    type: str
    image: object
    pointer: str


@dataclass
class Review:
    uid: str
    group: str
    version: str
    kind: str
    resource: str
    sub_resource: str
    namespace: str
    name: str
    operation: str
    dry_run: bool
    username: str
    containers: list[Container] = field(default_factory=list)
    # containers whose image an UPDATE did not change: admitted when they entered the spec
    unchanged: set[tuple[str, str, object]] = field(default_factory=set)


def _gvk(value: Any, what: str, uid: str) -> tuple[str, str, str]:
    if not isinstance(value, Mapping):
        raise BadReview(f"request.{what} is missing or not an object", uid)
    parts = []
    for key in ("group", "version", "kind"):
        v = value.get(key, "")
        if not isinstance(v, str):
            raise BadReview(f"request.{what}.{key} is not a string", uid)
        parts.append(v)
    return parts[0], parts[1], parts[2]


def _str(req: Mapping[str, Any], key: str, uid: str) -> str:
    v = req.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadReview(f"request.{key} is not a string", uid)
    return v


def _containers(obj: Any, path: tuple[str, ...], uid: str) -> list[Container]:
    """Every container of ``obj``'s pod spec at ``path``; a missing spec or list has none."""
    if not isinstance(obj, Mapping):
        raise BadReview("request.object is not an object", uid)
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            return []
    if not isinstance(node, Mapping):
        raise BadReview("/" + "/".join(path) + " is not an object", uid)
    out = []
    for list_key, ctype in CONTAINER_LISTS:
        items = node.get(list_key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise BadReview(f"{list_key} is not a list", uid)
        if len(items) > MAX_CONTAINERS:
            raise BadReview(f"{list_key} has more than {MAX_CONTAINERS} entries", uid)
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise BadReview(f"{list_key}[{i}] is not an object", uid)
            name = item.get("name", "")
            pointer = "/" + "/".join((*path, list_key, str(i), "image"))
            out.append(Container(name if isinstance(name, str) else str(name), ctype, item.get("image"), pointer))
    return out


def parse_review(body: bytes) -> Review:
    """The request of an AdmissionReview body; raises :class:`BadReview` with a clear message."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise BadReview("the body is not a JSON object")
    req = doc.get("request")
    uid = req.get("uid") if isinstance(req, Mapping) else None
    uid = uid if isinstance(uid, str) and 0 < len(uid) <= 128 else ""
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise BadReview(
            f"expected apiVersion {API_VERSION} and kind {KIND}; configure admissionReviewVersions: [v1]", uid
        )
    if not isinstance(req, Mapping):
        raise BadReview("request is missing or not an object", uid)
    if not uid:
        raise BadReview("request.uid is missing, empty or longer than 128 characters")
    group, version, kind = _gvk(req.get("kind"), "kind", uid)
    resource = req.get("resource")
    resource_name = resource.get("resource", "") if isinstance(resource, Mapping) else ""
    user = req.get("userInfo")
    username = user.get("username", "") if isinstance(user, Mapping) else ""
    review = Review(
        uid=uid,
        group=group,
        version=version,
        kind=kind,
        resource=resource_name if isinstance(resource_name, str) else "",
        sub_resource=_str(req, "subResource", uid),
        namespace=_str(req, "namespace", uid),
        name=_str(req, "name", uid),
        operation=_str(req, "operation", uid),
        dry_run=req.get("dryRun") is True,
        username=username if isinstance(username, str) else "",
    )
    if review.operation in ("DELETE", "CONNECT"):
        return review  # nothing is created or changed that could run
    path = SPEC_PATHS.get((group, kind))
    if path is None:
        known = ", ".join(f"{g}/{k}".lstrip("/") for g, k in SPEC_PATHS)
        raise BadReview(f"kind {group}/{kind} has no pod template this webhook checks (known: {known})", uid)
    obj = req.get("object")
    review.containers = _containers(obj, path, uid)
    if isinstance(obj, Mapping) and not review.name:
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):  # generateName: pods of one ReplicaSet share one record
            for key in ("name", "generateName"):
                if isinstance(meta.get(key), str) and meta[key]:
                    review.name = meta[key][:253]
                    break
    old = req.get("oldObject")
    if review.operation == "UPDATE" and isinstance(old, Mapping):
        try:
            before = {(c.type, c.name, c.image) for c in _containers(old, path, uid) if isinstance(c.image, str)}
        except BadReview:
            before = set()
        review.unchanged = {(c.type, c.name, c.image) for c in review.containers if (c.type, c.name, c.image) in before}
    return review


def response(
    uid: str,
    allowed: bool,
    *,
    code: int | None = None,
    message: str | None = None,
    warnings: list[str] | None = None,
    patch: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A complete AdmissionReview answer; a denial always carries ``status.code`` and ``message``."""
    resp: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        resp["status"] = {"code": code or 403, "message": message or "denied by Hallmark admission policy"}
    elif message:
        resp["status"] = {"code": code or 200, "message": message}
    if warnings:
        resp["warnings"] = [w if len(w) <= 256 else w[:253] + "..." for w in warnings[:40]]
    if patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    return {"apiVersion": API_VERSION, "kind": KIND, "response": resp}
