"""The whole map in one process with the real ingestion on both ends: an annotated image with a
signed SLSA v1 attestation (a DSSE signer here, its key in the trust store) and a contradicting
annotation, a kubectl-shaped inventory (Deployment -> ReplicaSet -> Pod, Service, Ingress), and
the explore answer naming the workload, its ingress path, the finding and the verified source."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hallmark.app import Hallmark
from hallmark.config import load_config
from hallmark.explore.filters import parse_filters
from hallmark.explore.query import explore
from hallmark.inventory.parse import parse_inventory
from hallmark.inventory.store import ingest
from hallmark.metadata.store import utcnow
from hallmark.pipeline.finding_rows import replace_findings
from hallmark.pipeline.tables import images
from tests.explore.graph import finding
from tests.provenance.attest import COMMIT_A, COMMIT_B, envelope, new_key, slsa_v1, write_public_key
from tests.provenance.test_ingest import REPO, attach, push_image

HOST = "registry.example"


@pytest.fixture
def hm(tmp_path: Path) -> Iterator[Hallmark]:
    key = new_key()
    write_public_key(key, tmp_path / "trust" / "keys" / "ci.pub")
    env = {
        "HALLMARK_DATA_DIR": str(tmp_path / "data"),
        "HALLMARK_SIGNING__TRUST_STORE": str(tmp_path / "trust"),
        "HALLMARK_PIPELINE__CONTENT_CHECKS": "false",
    }
    h = Hallmark.open(load_config(environ=env))
    h.trusted_key = key  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        h.close()


def _meta(kind: str, name: str, uid: str, owner: tuple[str, str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "shop",
        "uid": uid,
        "creationTimestamp": "2026-12-05T08:00:00Z",
        "labels": {"app": "web"},
    }
    if owner:
        api, okind, oname = owner[0], owner[1], owner[2].split("/")[0]
        meta["ownerReferences"] = [
            {"apiVersion": api, "kind": okind, "name": oname, "uid": owner[2].split("/")[1], "controller": True,
             "blockOwnerDeletion": True}
        ]  # fmt: skip
    return meta


def kubectl(digest: str) -> dict[str, Any]:
    """``kubectl get pods,deployments,replicasets,services,ingresses -n shop -o json`` of one app."""
    image = f"{HOST}/{REPO}:v1"
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 8080, "name": "http"}]}]},
    }
    dep_uid, rs_uid = "d0d0d0d0-0000-4000-8000-000000000001", "d0d0d0d0-0000-4000-8000-000000000002"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta("Pod", "web-7d9c5b8f6-2xk9q", "d0d0d0d0-0000-4000-8000-000000000003",
                          ("apps/v1", "ReplicaSet", f"web-7d9c5b8f6/{rs_uid}")),
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "web", "image": image, "imageID": f"{HOST}/{REPO}@{digest}", "ready": True,
                 "restartCount": 0, "started": True, "state": {"running": {"startedAt": "2026-12-05T08:00:12Z"}}}
            ],
        },
    }  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [
            pod,
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("Deployment", "web", dep_uid),
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template},
             "status": {"replicas": 1}},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet",
             "metadata": _meta("ReplicaSet", "web-7d9c5b8f6", rs_uid, ("apps/v1", "Deployment", f"web/{dep_uid}")),
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template},
             "status": {"replicas": 1}},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": _meta("Service", "web", "d0d0d0d0-0000-4000-8000-000000000004"),
             "spec": {"type": "ClusterIP", "selector": {"app": "web"},
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}},
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
             "metadata": _meta("Ingress", "shop", "d0d0d0d0-0000-4000-8000-000000000005"),
             "spec": {"rules": [{"host": "shop.example", "http": {"paths": [
                 {"path": "/", "pathType": "Prefix",
                  "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}},
        ],
    }  # fmt: skip


def test_exposed_critical_workload_with_the_verified_commit_and_run(hm: Hallmark) -> None:
    digest, manifest = push_image(hm, commit=COMMIT_A)  # annotations and labels say commit A
    attach(hm, manifest, envelope(slsa_v1(digest, commit=COMMIT_B), hm.trusted_key, keyid="ci"))  # type: ignore[attr-defined]
    report = {"findings": [finding("CVE-2024-3094", "critical", package="xz-utils", version="5.6.0-0.2",
                                   fixed=["5.6.1+really5.4.5-1"], kev=True)]}  # fmt: skip
    replace_findings(hm.meta, REPO, digest, report)
    with hm.meta.transaction() as conn:  # the pipeline's image row (not indexed here: no layers to read)
        conn.execute(
            images.insert().values(repo_name=REPO, digest=digest, status="done", grade="F", updated_at=utcnow())
        )
    result = ingest(hm.meta, "prod", parse_inventory(kubectl(digest)), dt.datetime.now(dt.UTC), "test", {HOST})
    assert result.as_dict()["exposed"] == 1
    page = explore(hm.meta, parse_filters({"exposed": "true", "severity": "critical"}))
    (row,) = page["rows"]
    assert row["workload"]["cluster"] == "prod" and row["workload"]["namespace"] == "shop"
    assert (row["workload"]["kind"], row["workload"]["name"]) == ("Deployment", "web")  # not the Pod or ReplicaSet
    (path,) = row["workload"]["exposure"]
    assert (path["via"], path["host"], path["path"], path["service"]) == ("ingress", "shop.example", "/", "web")
    assert row["image"] == {
        "repository": REPO, "digest": digest, "ref": f"{REPO}@{digest}", "digest_source": "status",
        "index_digest": None,
    }  # fmt: skip
    assert [f["id"] for f in row["findings"]] == ["CVE-2024-3094"] and row["findings"][0]["kev"]
    # the signed statement's commit and run first, the contradicting annotation and label kept after
    assert row["source"]["kind"] == "slsa" and row["source"]["verified"] is True
    assert row["source"]["commit"] == COMMIT_B and row["source"]["repository"] == "https://github.com/acme/shop"
    assert row["source"]["run_url"] == "https://github.com/acme/shop/actions/runs/4242/attempts/1"
    assert [(p["kind"], p["commit"]) for p in row["provenance"]] == [
        ("slsa", COMMIT_B), ("annotation", COMMIT_A), ("label", COMMIT_A)
    ]  # fmt: skip
    assert row["grade"] == "F"
    built = explore(hm.meta, parse_filters({"source_repo": "git@github.com:acme/shop.git", "view": "images"}))
    assert [(r["image"]["digest"], r["workload_count"], r["exposed_count"]) for r in built["rows"]] == [(digest, 1, 1)]
