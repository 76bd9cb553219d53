"""From ``kubectl get pods,deployments,... -A -o json`` to the workloads a person manages.

Pure: no database, no HTTP. Each item is checked on its own; what cannot be used is reported
as a :class:`Skip` and the rest goes on, so one broken object never costs the others.

- Owner references (by uid, the controller reference first) lead each Pod to the top of its
  chain: Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, Pod -> StatefulSet/DaemonSet.
  An owner that is not in the inventory (an Argo Rollout, a custom operator) still names the
  workload from the reference itself; a Node owner (static pods) leaves the Pod as the workload.
- A workload's images come from its live pods (``status.*Statuses[].imageID``, else the digest
  in the spec's image); a workload without live pods (scaled to 0, a CronJob between runs) uses
  its pod template, and the tag is resolved in Hallmark later (:mod:`hallmark.inventory.store`).
- Exposure follows Kubernetes: a Service selects pods when its selector is a non-empty subset of
  their labels in the same namespace, and reaches them on a port whose ``targetPort`` is a
  number or names a container port; an Ingress backend names a Service and one of its ports by
  number or name. LoadBalancer and NodePort Services expose; so does any Service an Ingress
  routes to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hallmark.inventory.refs import digest_of_image_id, parse_image

WORKLOAD_KINDS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"})
KINDS = WORKLOAD_KINDS | {"Pod", "Service", "Ingress"}
CONTAINER_TYPES = (
    ("containers", "containerStatuses", "container"),
    ("initContainers", "initContainerStatuses", "init"),
    ("ephemeralContainers", "ephemeralContainerStatuses", "ephemeral"),
)
EXPOSING_TYPES = ("LoadBalancer", "NodePort")
# Annotations by which cloud providers make a LoadBalancer internal (still recorded as exposed,
# as the issue defines it, but flagged so a reader can tell).
INTERNAL_LB = {
    "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    "networking.gke.io/load-balancer-type": "internal",
    "cloud.google.com/load-balancer-type": "internal",
}
_MAX_OWNER_DEPTH = 16
_FINISHED = ("Succeeded", "Failed")


class InventoryError(ValueError):
    """The document as a whole is not an inventory (not a List with items)."""


@dataclass(frozen=True)
class Skip:
    kind: str | None
    namespace: str | None
    name: str | None
    reason: str

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "reason": self.reason}


@dataclass
class ContainerImage:
    """One container's image; ``digest`` None until resolved (see the store's tag resolution)."""

    container: str
    container_type: str  # container | init | ephemeral
    image_ref: str
    digest: str | None
    digest_source: str | None  # status | spec | tag
    host: str | None = None
    repository: str | None = None
    tag: str | None = None
    repo_name: str | None = None


@dataclass
class Workload:
    namespace: str
    kind: str
    name: str
    uid: str | None
    labels: dict[str, str]
    images: list[ContainerImage] = field(default_factory=list)
    exposure: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exposed(self) -> bool:
        return bool(self.exposure)


@dataclass
class Inventory:
    workloads: list[Workload]
    skipped: list[Skip]
    counts: dict[str, int]  # objects used, per kind
    newest_created: dt.datetime | None


@dataclass
class _Obj:
    kind: str
    namespace: str
    name: str
    uid: str | None
    item: dict[str, Any]
    owner: dict[str, Any] | None  # the controlling owner reference, if any


@dataclass
class _PodView:
    """What exposure matching needs of a pod or a pod template: labels and named container ports."""

    labels: dict[str, str]
    port_names: set[str]


# -- helpers ----------------------------------------------------------------------------------------
def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_map(value: Any) -> dict[str, str]:
    return {k: v for k, v in _dict(value).items() if isinstance(k, str) and isinstance(v, str)}


def _timestamp(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _controller(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The controlling owner reference (``controller: true``), else the only one there is."""
    refs = [r for r in _list(meta.get("ownerReferences")) if isinstance(r, dict)]
    refs = [r for r in refs if isinstance(r.get("kind"), str) and isinstance(r.get("name"), str)]
    for ref in refs:
        if ref.get("controller") is True:
            return ref
    return refs[0] if len(refs) == 1 else None


def _pod_spec(obj: _Obj) -> tuple[dict[str, Any], dict[str, str]] | None:
    """(pod spec, template labels) of a workload's pod template; a Pod's own spec and labels."""
    spec = _dict(obj.item.get("spec"))
    if obj.kind == "Pod":
        return spec, _str_map(_dict(obj.item.get("metadata")).get("labels"))
    if obj.kind == "CronJob":
        spec = _dict(_dict(spec.get("jobTemplate")).get("spec"))
    template = spec.get("template")
    if not isinstance(template, dict):
        return None
    return _dict(template.get("spec")), _str_map(_dict(template.get("metadata")).get("labels"))


def _images(spec: dict[str, Any], status: dict[str, Any] | None) -> tuple[list[ContainerImage], list[str]]:
    """The containers of a pod spec with their digests; problems as text (the rest still counts)."""
    out: list[ContainerImage] = []
    problems: list[str] = []
    for spec_key, status_key, ctype in CONTAINER_TYPES:
        ids: dict[str, str] = {}
        if status is not None:
            for cs in _list(status.get(status_key)):
                if isinstance(cs, dict) and isinstance(cs.get("name"), str) and isinstance(cs.get("imageID"), str):
                    ids[cs["name"]] = cs["imageID"]
        for c in _list(spec.get(spec_key)):
            name, image = _dict(c).get("name"), _dict(c).get("image")
            if not isinstance(name, str) or not name:
                problems.append(f"{spec_key} entry without a name")
                continue
            if not isinstance(image, str) or not image.strip():
                problems.append(f"{ctype} {name!r} has no image")
                continue
            ref = parse_image(image)
            digest = digest_of_image_id(ids.get(name, ""))
            source = "status" if digest else None
            if digest is None and ref is not None and ref.digest:
                digest, source = ref.digest, "spec"
            out.append(
                ContainerImage(
                    name,
                    ctype,
                    image.strip(),
                    digest,
                    source,
                    ref.host if ref else None,
                    ref.repository if ref else None,
                    ref.tag if ref else None,
                )
            )
    return out, problems


def _port_names(spec: dict[str, Any]) -> set[str]:
    names = set()
    for spec_key, _, _ in CONTAINER_TYPES[:2]:
        for c in _list(spec.get(spec_key)):
            for p in _list(_dict(c).get("ports")):
                if isinstance(_dict(p).get("name"), str):
                    names.add(p["name"])
    return names


def _merge_images(images: Iterable[ContainerImage]) -> list[ContainerImage]:
    """One row per container and digest over a workload's pods (a rollout runs two digests)."""
    rank = {"status": 0, "spec": 1, "tag": 2, None: 3}
    best: dict[tuple[str, str, str, str | None], ContainerImage] = {}
    for img in images:
        key = (img.container_type, img.container, img.image_ref, img.digest)
        have = best.get(key)
        if have is None or rank[img.digest_source] < rank[have.digest_source]:
            best[key] = img
    resolved = {(k[0], k[1], k[2]) for k, v in best.items() if v.digest}
    # An unresolved row adds nothing when another pod of the same container resolved it.
    return [v for k, v in best.items() if v.digest or (k[0], k[1], k[2]) not in resolved]


# -- parsing ----------------------------------------------------------------------------------------
def _read_items(doc: Any) -> list[Any]:
    if not isinstance(doc, dict):
        raise InventoryError("an inventory is a JSON object (kubectl get ... -o json): got " + type(doc).__name__)
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind.endswith("List"):
        raise InventoryError(f"an inventory is a List (kubectl get ... -A -o json), not kind {kind!r}")
    items = doc.get("items")
    if not isinstance(items, list):
        raise InventoryError("the List has no items array")
    return items


def _objects(items: list[Any], skipped: list[Skip]) -> list[_Obj]:
    objs: list[_Obj] = []
    seen_uid: set[str] = set()
    seen_name: set[tuple[str, str, str]] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            skipped.append(Skip(None, None, f"items[{i}]", "not an object"))
            continue
        kind = item.get("kind") if isinstance(item.get("kind"), str) else None
        meta = item.get("metadata")
        name = _dict(meta).get("name")
        ns = _dict(meta).get("namespace")
        name = name if isinstance(name, str) and name else None
        ns = ns if isinstance(ns, str) and ns else None
        if kind not in KINDS:
            skipped.append(Skip(kind, ns, name or f"items[{i}]", f"kind {kind!r} is not part of an inventory"))
            continue
        if name is None or ns is None:
            skipped.append(Skip(kind, ns, name or f"items[{i}]", "metadata.name or metadata.namespace missing"))
            continue
        uid = _dict(meta).get("uid")
        uid = uid if isinstance(uid, str) and uid else None
        if (kind, ns, name) in seen_name or (uid is not None and uid in seen_uid):
            skipped.append(Skip(kind, ns, name, "duplicate object (same kind/namespace/name or uid)"))
            continue
        if not isinstance(item.get("spec"), dict):
            skipped.append(Skip(kind, ns, name, "no spec"))
            continue
        seen_name.add((kind, ns, name))
        if uid is not None:
            seen_uid.add(uid)
        objs.append(_Obj(kind, ns, name, uid, item, _controller(_dict(meta))))
    return objs


def _top(obj: _Obj, by_uid: dict[str, _Obj]) -> tuple[str, str, str | None, _Obj | None]:
    """(kind, name, uid, object or None when only a reference names it) at the top of the chain."""
    current, seen = obj, {id(obj)}
    for _ in range(_MAX_OWNER_DEPTH):
        ref = current.owner
        if ref is None or ref.get("kind") == "Node":
            break
        owner = by_uid.get(str(ref.get("uid"))) if ref.get("uid") else None
        if owner is None:
            # Not in the inventory: the reference still names what a person manages.
            uid = ref.get("uid") if isinstance(ref.get("uid"), str) else None
            return str(ref["kind"]), str(ref["name"]), uid, None
        if owner.namespace != current.namespace or id(owner) in seen:
            break
        seen.add(id(owner))
        current = owner
    return current.kind, current.name, current.uid, current


def parse_inventory(doc: Any) -> Inventory:
    """Workloads with their images and exposure, and every item that could not be used."""
    items = _read_items(doc)
    skipped: list[Skip] = []
    objs = _objects(items, skipped)
    by_uid = {o.uid: o for o in objs if o.uid}
    counts: dict[str, int] = {}
    newest: dt.datetime | None = None

    # Group pods and controllers under the workload at the top of their owner chain.
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    services: list[_Obj] = []
    ingresses: list[_Obj] = []
    for o in objs:
        created = _timestamp(_dict(o.item.get("metadata")).get("creationTimestamp"))
        if created and (newest is None or created > newest):
            newest = created
        counts[o.kind] = counts.get(o.kind, 0) + 1
        if o.kind == "Service":
            services.append(o)
            continue
        if o.kind == "Ingress":
            ingresses.append(o)
            continue
        kind, name, uid, head = _top(o, by_uid)
        g = groups.setdefault((o.namespace, kind, name), {"uid": uid, "top": head, "pods": []})
        if o.kind == "Pod":
            g["pods"].append(o)

    net = _network(services, ingresses)
    workloads: list[Workload] = []
    for (ns, kind, name), g in groups.items():
        top: _Obj | None = g["top"]
        pods: list[_Obj] = g["pods"]
        live = [p for p in pods if _dict(p.item.get("status")).get("phase") not in _FINISHED]
        sources: list[tuple[dict[str, Any], dict[str, str], dict[str, Any] | None]] = []
        if live:
            sources = [(_dict(p.item["spec"]), *_pod_labels_status(p)) for p in live]
        elif top is not None and top.kind != "Pod" and _pod_spec(top) is not None:
            spec, labels = _pod_spec(top) or ({}, {})
            sources = [(spec, labels, None)]
        else:
            sources = [(_dict(p.item["spec"]), *_pod_labels_status(p)) for p in pods]
        images: list[ContainerImage] = []
        views: list[_PodView] = []
        problems: list[str] = []
        for spec, labels, status in sources:
            got, bad = _images(spec, status)
            images += got
            problems += bad
            views.append(_PodView(labels, _port_names(spec)))
        labels = _str_map(_dict(top.item.get("metadata")).get("labels")) if top else {}
        if not images:
            reason = "; ".join(sorted(set(problems))) or "no containers with an image"
            if top is None and not pods:
                reason = "its owner is not in the inventory and it has no pods"
            skipped.append(Skip(kind, ns, name, f"no images ({reason})"))
            continue
        w = Workload(ns, kind, name, g["uid"], labels, _merge_images(images))
        w.exposure = _exposure(ns, views, net)
        workloads.append(w)
    workloads.sort(key=lambda w: (w.namespace, w.kind, w.name))
    return Inventory(workloads, skipped, counts, newest)


def _pod_labels_status(pod: _Obj) -> tuple[dict[str, str], dict[str, Any]]:
    return _str_map(_dict(pod.item.get("metadata")).get("labels")), _dict(pod.item.get("status"))


# -- exposure ---------------------------------------------------------------------------------------
def _selects(service: _Obj, views: list[_PodView]) -> list[_PodView]:
    selector = _str_map(_dict(service.item["spec"]).get("selector"))
    if not selector:
        return []  # no selector: endpoints are managed by hand, nothing to match
    return [v for v in views if all(v.labels.get(k) == val for k, val in selector.items())]


def _reaches(port: dict[str, Any], views: list[_PodView]) -> bool:
    """A Service port reaches a pod when its targetPort is a number or a name the pod declares."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return True
    return isinstance(target, str) and any(target in v.port_names for v in views)


def _service_ports(service: _Obj) -> list[dict[str, Any]]:
    return [p for p in _list(_dict(service.item["spec"]).get("ports")) if isinstance(p, dict)]


def _ingress_backends(ing: _Obj) -> list[tuple[str | None, str | None, str, int | str]]:
    """(host, path, service, port) for every rule path and the default backend (v1 and v1beta1)."""
    spec = _dict(ing.item["spec"])
    out: list[tuple[str | None, str | None, str, int | str]] = []

    def backend(b: Any) -> tuple[str, int | str] | None:
        b = _dict(b)
        svc = _dict(b.get("service"))
        if isinstance(svc.get("name"), str):  # networking.k8s.io/v1
            port = _dict(svc.get("port"))
            value = port.get("number") if isinstance(port.get("number"), int) else port.get("name")
            return (svc["name"], value) if isinstance(value, int | str) else None
        if isinstance(b.get("serviceName"), str) and isinstance(b.get("servicePort"), int | str):  # v1beta1
            return b["serviceName"], b["servicePort"]
        return None

    default = backend(spec.get("defaultBackend") or spec.get("backend"))
    if default:
        out.append((None, None, *default))
    for rule in _list(spec.get("rules")):
        host = _dict(rule).get("host") if isinstance(_dict(rule).get("host"), str) else None
        for p in _list(_dict(_dict(rule).get("http")).get("paths")):
            b = backend(_dict(p).get("backend"))
            if b:
                path = _dict(p).get("path") if isinstance(_dict(p).get("path"), str) else None
                out.append((host, path, *b))
    return out


def _internal_lb(service: _Obj) -> bool:
    notes = _str_map(_dict(service.item.get("metadata")).get("annotations"))
    return any(notes.get(k, "").lower() == v for k, v in INTERNAL_LB.items())


@dataclass
class _Network:
    """Services indexed by (namespace, one pair of their selector), Ingress backends by (namespace,
    Service): a workload looks only at candidates, not at every Service of a large cluster."""

    by_pair: dict[tuple[str, str, str], list[tuple[int, _Obj]]]
    backends: dict[tuple[str, str], list[tuple[tuple[int, int], str, str | None, str | None, int | str]]]


def _network(services: list[_Obj], ingresses: list[_Obj]) -> _Network:
    by_pair: dict[tuple[str, str, str], list[tuple[int, _Obj]]] = {}
    for i, svc in enumerate(services):
        selector = _str_map(_dict(svc.item["spec"]).get("selector"))
        if selector:  # no selector: endpoints are managed by hand, nothing to match
            key = min(selector)
            by_pair.setdefault((svc.namespace, key, selector[key]), []).append((i, svc))
    backends: dict[tuple[str, str], list[tuple[tuple[int, int], str, str | None, str | None, int | str]]] = {}
    for i, ing in enumerate(ingresses):
        for j, (host, path, svc_name, port) in enumerate(_ingress_backends(ing)):
            backends.setdefault((ing.namespace, svc_name), []).append(((i, j), ing.name, host, path, port))
    return _Network(by_pair, backends)


def _exposure(ns: str, views: list[_PodView], net: _Network) -> list[dict[str, Any]]:
    candidates: dict[int, _Obj] = {}
    for v in views:
        for key, value in v.labels.items():
            for i, svc in net.by_pair.get((ns, key, value), []):
                candidates[i] = svc
    out: list[dict[str, Any]] = []
    reached: dict[str, list[dict[str, Any]]] = {}  # service name -> its ports that reach the workload
    for i in sorted(candidates):
        svc = candidates[i]
        matched = _selects(svc, views)
        ports = [p for p in _service_ports(svc) if matched and _reaches(p, matched)]
        if not ports:
            continue
        reached[svc.name] = ports
        stype = _dict(svc.item["spec"]).get("type") or "ClusterIP"
        if stype in EXPOSING_TYPES:
            entry: dict[str, Any] = {
                "via": "service",
                "type": stype,
                "service": svc.name,
                "ports": [p.get("port") for p in ports],
            }
            if stype == "LoadBalancer" and _internal_lb(svc):
                entry["internal"] = True
            out.append(entry)
    routed: list[tuple[tuple[int, int], dict[str, Any]]] = []
    for svc_name, ports in reached.items():
        for order, ing_name, host, path, port in net.backends.get((ns, svc_name), []):
            if any(p.get("port") == port or (isinstance(port, str) and p.get("name") == port) for p in ports):
                item: dict[str, Any] = {"via": "ingress", "ingress": ing_name, "host": host, "path": path}
                routed.append((order, item | {"service": svc_name, "port": port}))
    for _, item in sorted(routed, key=lambda r: r[0]):
        if item not in out:
            out.append(item)
    return out
