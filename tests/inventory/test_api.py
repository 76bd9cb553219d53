"""Inventories through a real ``hallmark serve`` (SQLite and PostgreSQL): kubectl-shaped input in,
workloads with digests and exposure paths out, row by row; bad input reported, nothing half-applied."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.inventory.helpers import D, as_list, bare_pod, kubectl_list, without

T1, T2, T3 = "2026-12-05T10:00:00Z", "2026-12-05T11:00:00Z", "2026-12-05T12:00:00Z"


def post(client: httpx.Client, cluster: str, doc: Any, taken_at: str | None = T1) -> httpx.Response:
    params = {"taken_at": taken_at} if taken_at else {}
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return client.post(
        f"/api/v1/clusters/{cluster}/inventory",
        params=params,
        content=body,
        headers={"Content-Type": "application/json"},
    )


def workloads(client: httpx.Client, cluster: str, **params: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/clusters/{cluster}/workloads", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["workloads"])


def rows(ws: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """One comparable row per (workload, image)."""
    return [
        (
            w["namespace"],
            w["kind"],
            w["name"],
            i["container_type"],
            i["container"],
            i["digest"],
            i["digest_source"],
            i["repo_name"],
        )
        for w in ws
        for i in w["images"]
    ]


def test_kubectl_inventory_row_by_row(client: httpx.Client, server: Server, pushed: dict[str, str]) -> None:
    r = post(client, "prod", kubectl_list(server.host))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["skipped"] == [] and doc["unresolved"] == []
    assert (doc["workloads"], doc["exposed"], doc["images"]) == (7, 4, 9)
    assert doc["inventory_at"] == T1
    assert doc["counts"] == {
        "CronJob": 1,
        "DaemonSet": 1,
        "Deployment": 3,
        "Ingress": 1,
        "Job": 1,
        "Pod": 7,
        "ReplicaSet": 4,
        "Service": 7,
        "StatefulSet": 1,
    }

    ws = workloads(client, "prod")
    assert rows(ws) == [
        # CronJob -> Job -> Pod: the CronJob is what a person manages
        ("batch", "CronJob", "report", "container", "report", D("f"), "status", "shop/report"),
        # DaemonSet -> Pod, digest pinned in the spec and reported by the runtime
        ("kube-system", "DaemonSet", "node-agent", "container", "agent", D("e"), "status", "platform/agent"),
        # an image from outside Hallmark: recorded, no repository
        ("shop", "Deployment", "api", "container", "api", D("c"), "status", None),
        # Deployment -> ReplicaSet -> 2 Pods: one row per container and digest; the init container too;
        # the previous ReplicaSet (web:1.3, scaled to 0) runs nothing
        ("shop", "Deployment", "web", "container", "web", D("a"), "status", "shop/web"),
        ("shop", "Deployment", "web", "init", "migrate", D("b"), "status", "shop/web-migrate"),
        # scaled to 0: the template's tag, resolved in Hallmark at ingest time
        ("shop", "Deployment", "worker", "container", "worker", pushed["shop/worker"], "tag", "shop/worker"),
        # a bare Pod with an ephemeral debug container (Docker Hub images)
        ("shop", "Pod", "debug-shell", "container", "shell", D("1"), "status", None),
        ("shop", "Pod", "debug-shell", "ephemeral", "debugger-7xk2q", D("2"), "status", None),
        ("shop", "StatefulSet", "db", "container", "postgres", D("d"), "status", None),
    ]
    by_name = {w["name"]: w for w in ws}
    assert by_name["web"]["images"][0]["image_ref"] == f"{server.host}/shop/web:1.4"
    assert by_name["db"]["images"][0]["image_ref"] == "postgres:16"
    assert by_name["web"]["uid"] == "5d2c0c6e-0a61-4c59-9f5e-0d6f1f1a7b01"
    assert by_name["web"]["labels"] == {"app": "web", "team": "storefront"}

    exposure = {w["name"]: (w["exposed"], w["exposure"]) for w in ws}
    # ClusterIP Service behind an Ingress: exposed through the ingress, with host and path
    assert exposure["web"] == (
        True,
        [{"via": "ingress", "ingress": "shop", "host": "shop.example", "path": "/", "service": "web", "port": 80}],
    )
    # LoadBalancer, and an Ingress path to the same Service by port name
    assert exposure["api"] == (
        True,
        [
            {"via": "service", "type": "LoadBalancer", "service": "api", "ports": [443]},
            {
                "via": "ingress",
                "ingress": "shop",
                "host": "shop.example",
                "path": "/api",
                "service": "api",
                "port": "https",
            },
        ],
    )
    # NodePort whose named targetPort the agent declares; the other NodePort names a port no container has
    assert exposure["node-agent"] == (
        True,
        [{"via": "service", "type": "NodePort", "service": "node-agent-metrics", "ports": [9100]}],
    )
    # no pods: the template's labels are matched; the provider's internal-LB annotation is kept
    assert exposure["worker"] == (
        True,
        [{"via": "service", "type": "LoadBalancer", "service": "worker", "ports": [9000], "internal": True}],
    )
    # ClusterIP only (headless): internal
    assert exposure["db"] == (False, [])
    assert exposure["report"] == (False, []) and exposure["debug-shell"] == (False, [])

    assert [w["name"] for w in workloads(client, "prod", exposed="true")] == ["node-agent", "api", "web", "worker"]
    assert [w["name"] for w in workloads(client, "prod", namespace="batch")] == ["report"]
    page = client.get("/api/v1/clusters/prod/workloads", params={"limit": "2"}).json()
    assert len(page["workloads"]) == 2 and page["next_offset"] == 2

    clusters = {c["name"]: c for c in client.get("/api/v1/clusters").json()["clusters"]}
    prod = clusters["prod"]
    assert (prod["inventory_at"], prod["workloads"], prod["exposed"], prod["images"]) == (T1, 7, 4, 9)
    assert prod["skipped_total"] == 0


def test_unknown_cluster_and_bad_names(client: httpx.Client) -> None:
    assert client.get("/api/v1/clusters/nowhere/workloads").status_code == 404
    assert post(client, "ends-with-dash-", as_list()).status_code == 400
    assert client.get("/api/v1/clusters/prod/workloads", params={"exposed": "maybe"}).status_code == 400


def test_malformed_json_and_non_list_are_refused_and_change_nothing(client: httpx.Client) -> None:
    r = post(client, "bad", b'{"apiVersion": "v1", "kind": "List", "items": [')
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = post(client, "bad", bare_pod("solo", "nginx:1.27", "docker.io/library/nginx@" + D("3")))
    assert r.status_code == 400 and "List" in r.json()["error"]["message"]
    r = post(client, "bad", {"apiVersion": "v1", "kind": "List", "items": {"not": "an array"}})
    assert r.status_code == 400
    assert client.get("/api/v1/clusters/bad/workloads").status_code == 404


def test_broken_items_are_reported_and_the_rest_ingested(client: httpx.Client, server: Server) -> None:
    good = bare_pod("good", "nginx:1.27", "docker-pullable://docker.io/library/nginx@" + D("3"))
    pending = bare_pod("pending", "quay.io/acme/tool:5")  # no imageID yet, external tag: kept, unresolved
    no_images = bare_pod("empty", "nginx:1.27")
    no_images["spec"]["containers"] = []
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "default"}}
    nameless = bare_pod("x", "nginx:1.27")
    del nameless["metadata"]["name"]
    doc = as_list(good, "oops", configmap, no_images, nameless, pending, good)
    r = post(client, "partial", doc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["skipped"] == [
        {"kind": None, "namespace": None, "name": "items[1]", "reason": "not an object"},
        {
            "kind": "ConfigMap",
            "namespace": "default",
            "name": "settings",
            "reason": "kind 'ConfigMap' is not part of an inventory",
        },
        {
            "kind": "Pod",
            "namespace": "default",
            "name": "items[4]",
            "reason": "metadata.name or metadata.namespace missing",
        },
        {
            "kind": "Pod",
            "namespace": "default",
            "name": "good",
            "reason": "duplicate object (same kind/namespace/name or uid)",
        },
        {"kind": "Pod", "namespace": "default", "name": "empty", "reason": "no images (no containers with an image)"},
    ]
    assert body["unresolved"] == [
        {
            "kind": "Pod",
            "namespace": "default",
            "name": "pending",
            "container": "main",
            "image": "quay.io/acme/tool:5",
            "reason": "no imageID and no digest in the reference of an image outside Hallmark",
        }
    ]
    assert rows(workloads(client, "partial")) == [
        ("default", "Pod", "good", "container", "main", D("3"), "status", None),
        ("default", "Pod", "pending", "container", "main", None, None, None),
    ]
    info = {c["name"]: c for c in client.get("/api/v1/clusters").json()["clusters"]}["partial"]
    assert info["skipped_total"] == 5 and info["unresolved"] == 1


def test_unknown_hallmark_tag_is_reported(client: httpx.Client, server: Server, pushed: dict[str, str]) -> None:
    doc = as_list(
        bare_pod("old", f"{server.host}/shop/web:0.9"),
        bare_pod("ghost", f"{server.host}/shop/nothing:1"),
        bare_pod("latest", f"{server.host}/shop/web"),
    )
    body = post(client, "tags", doc).json()
    assert [(u["name"], u["reason"]) for u in body["unresolved"]] == [
        ("ghost", "repository 'shop/nothing' is not in Hallmark"),
        ("latest", "no imageID, no digest, and tag 'latest' is not in Hallmark"),
        ("old", "no imageID, no digest, and tag '0.9' is not in Hallmark"),
    ]


def test_older_inventory_never_replaces_a_newer_one(client: httpx.Client, server: Server) -> None:
    full = kubectl_list(server.host)
    assert post(client, "order", full, T2).status_code == 200
    before = workloads(client, "order")
    r = post(client, "order", without(full, ("Deployment", "web")), T1)
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "INVENTORY_STALE"
    assert err["message"] == (
        "cluster 'order' already has an inventory taken at 2026-12-05T11:00:00Z; "
        "this one was taken at 2026-12-05T10:00:00Z and is older: nothing was replaced"
    )
    assert workloads(client, "order") == before
    # the same upload again (a retried report) is accepted
    assert post(client, "order", full, T2).status_code == 200
    assert rows(workloads(client, "order")) == rows(before)
    # a time in the future would lock the cluster: refused
    r = post(client, "order", full, "2999-01-01T00:00:00Z")
    assert r.status_code == 400 and "future" in r.json()["error"]["message"]
    assert post(client, "order", full, "2026-12-05T11:00:00").status_code == 400  # no offset
    info = {c["name"]: c for c in client.get("/api/v1/clusters").json()["clusters"]}["order"]
    assert info["inventory_at"] == T2


def test_new_inventory_replaces_the_cluster(client: httpx.Client, server: Server) -> None:
    full = kubectl_list(server.host)
    assert post(client, "replace", full, T1).status_code == 200
    assert post(client, "other", full, T1).status_code == 200
    smaller = without(
        full,
        ("Deployment", "web"),
        ("ReplicaSet", "web-7d9c5b8f6"),
        ("ReplicaSet", "web-5f6d7c8b9"),
        ("Pod", "web-7d9c5b8f6-2xk9q"),
        ("Pod", "web-7d9c5b8f6-h4m7z"),
        ("Ingress", "shop"),
    )
    r = post(client, "replace", smaller, T2)
    assert r.status_code == 200 and r.json()["workloads"] == 6
    ws = {w["name"]: w for w in workloads(client, "replace")}
    assert sorted(ws) == ["api", "db", "debug-shell", "node-agent", "report", "worker"]
    assert ws["api"]["exposure"] == [{"via": "service", "type": "LoadBalancer", "service": "api", "ports": [443]}]
    # another cluster's rows are untouched
    assert len(workloads(client, "other")) == 7
    # an empty cluster is an inventory too
    assert post(client, "replace", as_list(), T3).json()["workloads"] == 0
    assert workloads(client, "replace") == []


def test_large_inventory_beyond_the_default_body_limit(client: httpx.Client) -> None:
    pods = [bare_pod(f"p{i:04d}", "nginx:1.27", "docker.io/library/nginx@" + D("3")) for i in range(1500)]
    for p in pods:
        p["metadata"]["annotations"] = {"note": "x" * 600}
    body = json.dumps(as_list(*pods)).encode()
    assert len(body) > 1 << 20
    r = post(client, "large", body)
    assert r.status_code == 200, r.text
    assert r.json()["workloads"] == 1500


def test_oversized_inventory_is_refused_before_reading(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"POST /api/v1/clusters/huge/inventory HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 70000000\r\n\r\n{"
        )
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413"), head


# -- the CLI against the same server -------------------------------------------------------------------
def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    # Not inside a cluster, even when the tests run in a pod: --in-cluster must find no service account.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE_")}
    return subprocess.run(
        [sys.executable, "-m", "hallmark", "k8s", "report", *args],
        env=env,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def inventory_file(tmp_path: Path, server: Server) -> Iterator[Path]:
    f = tmp_path / "kubectl.json"
    f.write_text(json.dumps(kubectl_list(server.host), indent=4))
    yield f


def test_cli_report_from_file_and_stdin(client: httpx.Client, server: Server, inventory_file: Path) -> None:
    r = _cli("--cluster", "cli", "--server", server.url, "--file", str(inventory_file), "--taken-at", T1)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == (
        f"cluster cli: 7 workloads (4 exposed), 9 images, 0 unresolved, 0 skipped; inventory taken at {T1}"
    )
    assert len(workloads(client, "cli")) == 7
    smaller = without(kubectl_list(server.host), ("StatefulSet", "db"), ("Pod", "db-0"))
    r = _cli(
        "--cluster",
        "cli",
        "--server",
        server.url,
        "--file",
        "-",
        "--taken-at",
        T2,
        "--json",
        stdin=json.dumps(smaller).encode(),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["workloads"] == 6
    assert "db" not in {w["name"] for w in workloads(client, "cli")}
    # older than what is stored: one line, exit 2, nothing replaced
    r = _cli("--cluster", "cli", "--server", server.url, "--file", str(inventory_file), "--taken-at", T1)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: ") and "409" in r.stderr and "older" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert len(workloads(client, "cli")) == 6


def test_cli_errors_are_one_line(server: Server, inventory_file: Path, tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    cases = [
        (["--cluster", "Bad Name", "--server", server.url, "--file", str(inventory_file)], "invalid cluster name"),
        (["--cluster", "c", "--server", server.url, "--file", str(tmp_path / "missing.json")], "cannot read"),
        (["--cluster", "c", "--server", server.url, "--file", str(bad_json)], "not valid JSON"),
        (["--cluster", "c", "--server", "http://127.0.0.1:9", "--file", str(inventory_file)], "cannot reach"),
        (["--cluster", "c", "--server", server.url, "--file", str(inventory_file), "--in-cluster"], "one source"),
        (
            ["--cluster", "c", "--server", server.url, "--file", str(inventory_file), "--taken-at", "yesterday"],
            "RFC 3339",
        ),
        (["--cluster", "c", "--server", server.url, "--kubeconfig", str(tmp_path / "none.yaml")], "credentials"),
        (["--cluster", "c", "--server", server.url, "--in-cluster"], "in-cluster service account"),
    ]
    for args, expected in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
