"""The parser alone: image references and runtime image ids, owner chains, and exposure matching
as Kubernetes does it (selectors, port names and numbers, Ingress shapes)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hallmark.inventory.parse import InventoryError, parse_inventory
from hallmark.inventory.refs import digest_of_image_id, host_forms, parse_image
from tests.inventory.helpers import D, as_list, bare_pod, kubectl_list


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("nginx", ("docker.io", "library/nginx", "latest", None)),
        ("nginx:1.27", ("docker.io", "library/nginx", "1.27", None)),
        ("acme/app:2", ("docker.io", "acme/app", "2", None)),
        ("index.docker.io/library/redis:7", ("docker.io", "library/redis", "7", None)),
        ("Registry.Example:5000/team/app:v1", ("registry.example:5000", "team/app", "v1", None)),
        ("localhost/app", ("localhost", "app", "latest", None)),
        (f"ghcr.io/acme/api:3.1@{D('c')}", ("ghcr.io", "acme/api", "3.1", D("c"))),
        (f"ghcr.io/acme/api@{D('c')}", ("ghcr.io", "acme/api", None, D("c"))),
    ],
)
def test_image_references(ref: str, want: tuple[str, str, str | None, str | None]) -> None:
    got = parse_image(ref)
    assert got is not None and (got.host, got.repository, got.tag, got.digest) == want


@pytest.mark.parametrize("ref", ["", "  ", "nginx@sha256:short", "a b", "nginx:bad/tag", "host.io/"])
def test_not_image_references(ref: str) -> None:
    assert parse_image(ref) is None


@pytest.mark.parametrize(
    ("image_id", "want"),
    [
        (f"docker-pullable://registry.example/app@{D('a')}", D("a")),
        (f"docker.io/library/nginx@{D('b')}", D("b")),
        (D("c"), D("c")),
        (f"docker://{D('d')}", D("d")),
        ("", None),
        ("docker://nginx:latest", None),
        ("sha256:abc", None),
    ],
)
def test_runtime_image_ids(image_id: str, want: str | None) -> None:
    assert digest_of_image_id(image_id) == want


def test_host_forms() -> None:
    assert host_forms("https://hallmark.example") == {"hallmark.example", "hallmark.example:443"}
    assert host_forms("https://hallmark.example:8443/") == {"hallmark.example:8443"}
    assert host_forms("http://Hallmark.Example:80") == {"hallmark.example:80", "hallmark.example"}


def _owned(pod: dict[str, Any], kind: str, name: str, uid: str, api: str = "apps/v1") -> dict[str, Any]:
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": api, "blockOwnerDeletion": True, "controller": True, "kind": kind, "name": name, "uid": uid}
    ]
    return pod


def test_owner_outside_the_inventory_still_names_the_workload() -> None:
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "checkout-5b7d", "namespace": "shop", "uid": "rs-1"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "ghcr.io/a/c:1"}]}}},
    }
    _owned(rs, "Rollout", "checkout", "ro-1", api="argoproj.io/v1alpha1")
    pod = _owned(
        bare_pod("checkout-5b7d-x", "ghcr.io/a/c:1", f"ghcr.io/a/c@{D('a')}", ns="shop"),
        "ReplicaSet",
        "checkout-5b7d",
        "rs-1",
    )
    static = _owned(
        bare_pod("etcd-node1", "registry.k8s.io/etcd:3.5", f"registry.k8s.io/etcd@{D('e')}", "kube-system"),
        "Node",
        "node1",
        "n-1",
        "v1",
    )
    inv = parse_inventory(as_list(rs, pod, static))
    assert [(w.namespace, w.kind, w.name, w.uid) for w in inv.workloads] == [
        ("kube-system", "Pod", "etcd-node1", static["metadata"]["uid"]),  # static pod: a Node is no workload
        ("shop", "Rollout", "checkout", "ro-1"),
    ]


def test_rollout_in_progress_runs_two_digests_and_pending_pods_add_nothing_resolved() -> None:
    doc = kubectl_list()
    pods = [i for i in doc["items"] if i["kind"] == "Pod" and i["metadata"]["name"].startswith("web-")]
    newer = copy.deepcopy(pods[0])
    newer["metadata"]["name"] = "web-7d9c5b8f6-new"
    newer["metadata"]["uid"] = "new-uid"
    newer["status"]["containerStatuses"][0]["imageID"] = f"registry.hallmark.test/shop/web@{D('9')}"
    pending = copy.deepcopy(pods[0])
    pending["metadata"]["name"] = "web-7d9c5b8f6-pending"
    pending["metadata"]["uid"] = "pending-uid"
    pending["status"] = {"phase": "Pending"}
    doc["items"] += [newer, pending]
    web = next(w for w in parse_inventory(doc).workloads if w.name == "web")
    assert [(i.container, i.digest, i.digest_source) for i in web.images] == [
        ("web", D("a"), "status"),
        ("migrate", D("b"), "status"),
        ("web", D("9"), "status"),
    ]


def test_finished_job_pods_give_way_to_the_cronjob_template() -> None:
    doc = kubectl_list()
    for i in doc["items"]:
        if i["kind"] == "Pod" and i["metadata"]["name"].startswith("report-"):
            i["status"]["phase"] = "Succeeded"
    report = next(w for w in parse_inventory(doc).workloads if w.name == "report")
    # the template names a tag: resolved later in Hallmark (store), nothing from the finished pod
    assert [(i.image_ref, i.digest, i.tag) for i in report.images] == [
        ("registry.hallmark.test/shop/report:nightly", None, "nightly")
    ]


def _svc(
    name: str, stype: str, selector: dict[str, str] | None, ports: list[dict[str, Any]], ns: str = "default"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": stype, "ports": ports}
    if selector is not None:
        spec["selector"] = selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": "svc-" + name},
        "spec": spec,
    }


def test_selectors_and_ports_as_kubernetes_matches_them() -> None:
    pod = bare_pod("app", "nginx:1.27", f"docker.io/library/nginx@{D('3')}")
    pod["metadata"]["labels"] = {"app": "shop", "tier": "front"}
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]
    items = [
        pod,
        _svc(
            "superset",
            "LoadBalancer",
            {"app": "shop", "tier": "front", "extra": "x"},
            [{"port": 80, "targetPort": 8080}],
        ),
        _svc("no-selector", "LoadBalancer", None, [{"port": 80}]),
        _svc("empty-selector", "NodePort", {}, [{"port": 80}]),
        _svc("elsewhere", "LoadBalancer", {"app": "shop"}, [{"port": 80}], ns="other"),
        _svc("wrong-name", "NodePort", {"app": "shop"}, [{"port": 80, "targetPort": "grpc"}]),
        _svc("by-number-text", "NodePort", {"app": "shop"}, [{"port": 81, "targetPort": "8080"}]),
        _svc("default-target", "LoadBalancer", {"tier": "front"}, [{"port": 8080}]),
        _svc("named", "ClusterIP", {"app": "shop"}, [{"name": "web", "port": 80, "targetPort": "http"}]),
        _svc("unnamed-port", "ClusterIP", {"app": "shop"}, [{"name": "web", "port": 80, "targetPort": "nope"}]),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "front", "namespace": "default", "uid": "ing-1"},
            "spec": {
                "defaultBackend": {"service": {"name": "named", "port": {"name": "web"}}},
                "rules": [
                    {
                        "http": {
                            "paths": [
                                {
                                    "path": "/x",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "named", "port": {"number": 81}}},
                                }
                            ]
                        }
                    },
                    {
                        "host": "a.example",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Exact",
                                    "backend": {"service": {"name": "unnamed-port", "port": {"number": 80}}},
                                }
                            ]
                        },
                    },
                    {
                        "host": "b.example",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"resource": {"kind": "Bucket", "name": "static"}},
                                }
                            ]
                        },
                    },
                    {
                        "host": "c.example",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "missing", "port": {"number": 80}}},
                                }
                            ]
                        },
                    },
                ],
            },
        },
        {  # the pre-1.22 shape, still found in old dumps
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": {"name": "legacy", "namespace": "default", "uid": "ing-2"},
            "spec": {
                "rules": [
                    {
                        "host": "old.example",
                        "http": {"paths": [{"path": "/", "backend": {"serviceName": "named", "servicePort": 80}}]},
                    }
                ]
            },
        },
    ]
    (w,) = parse_inventory(as_list(*items)).workloads
    # not: a selector with more labels than the pod, no or an empty selector, another namespace, a
    # targetPort name no container declares, an Ingress port the Service lacks, a resource backend,
    # a missing Service
    assert w.exposure == [
        {"via": "service", "type": "NodePort", "service": "by-number-text", "ports": [81]},
        {"via": "service", "type": "LoadBalancer", "service": "default-target", "ports": [8080]},
        {"via": "ingress", "ingress": "front", "host": None, "path": None, "service": "named", "port": "web"},
        {"via": "ingress", "ingress": "legacy", "host": "old.example", "path": "/", "service": "named", "port": 80},
    ]
    assert w.exposed


def test_not_a_list() -> None:
    docs: list[object] = [[], {"kind": "Pod"}, {"kind": "List"}, {"kind": "List", "items": "x"}]
    for doc in docs:
        with pytest.raises(InventoryError):
            parse_inventory(doc)


def test_owner_loops_end() -> None:
    a = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "a", "namespace": "n", "uid": "ua"},
        "spec": {},
    }
    b = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "b", "namespace": "n", "uid": "ub"},
        "spec": {},
    }
    _owned(a, "ReplicaSet", "b", "ub")
    _owned(b, "ReplicaSet", "a", "ua")
    pod = _owned(bare_pod("p", "nginx", f"docker.io/library/nginx@{D('3')}", ns="n"), "ReplicaSet", "a", "ua")
    inv = parse_inventory(as_list(a, b, pod))
    assert [(w.kind, w.name) for w in inv.workloads] == [("ReplicaSet", "b")]
