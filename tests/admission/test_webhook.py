"""The admission webhooks against a real ``hallmark serve`` with access control on: AdmissionReview
bodies as the API server sends them, the catalog's stages at deploy time, the policy's
registries, exemptions, modes, per-namespace overrides, grades and findings, the mutating
webhook's digest pins, bad input, cache invalidation, and the records (audit log, decisions)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from hallmark.admission.tables import admission_decisions
from hallmark.metadata.store import MetadataStore
from hallmark.pipeline.store import PipelineStore
from tests.admission.reviews import apply_patch, pod, pod_spec, review, workload
from tests.conftest import Server
from tests.ocihelp import push_image
from tests.pipeline.test_pipeline import wait_for

HOST = "hallmark.example.com"
CONFIG = """
[admission]
allowed_registries = ["registry.k8s.io", "ghcr.io/corp"]
exempt_namespaces = ["kube-system"]
exempt_images = ["docker.io/library/busybox:*"]

[admission.namespaces.legacy]
mode = "audit"

[admission.namespaces.dev]
mode = "off"

[admission.namespaces."strict-*"]
min_grade = "B"
max_severity = "high"
"""
IMAGES = {"adm/app": ("v1", "v2"), "adm/old": ("v1",), "adm/gone": ("v1",), "adm/graded": ("v1",)}


@dataclass
class Site:
    server: Server
    admin: tuple[str, str]
    data: Path
    digests: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30, auth=self.admin)

    def validate(self, body: Any, cluster: str | None = None) -> dict[str, Any]:
        return _post(self, "/admission/validate", body, cluster)

    def mutate(self, body: Any) -> dict[str, Any]:
        return _post(self, "/admission/mutate", body)

    def ref(self, repo_tag: str) -> str:
        return f"{HOST}/{repo_tag}"

    def pinned(self, repo_tag: str) -> str:
        return f"{HOST}/{repo_tag.rsplit(':', 1)[0]}@{self.digests[repo_tag]}"


def _post(site: Site, path: str, body: Any, cluster: str | None = None) -> dict[str, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    params = {"cluster": cluster} if cluster else None
    # No credentials: the API server calls the webhook without a Hallmark user.
    r = httpx.post(site.server.url + path, content=content, params=params, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview", doc
    assert isinstance(doc["response"]["allowed"], bool)
    if not doc["response"]["allowed"]:
        assert doc["response"]["status"]["code"] >= 400 and doc["response"]["status"]["message"]
    return dict(doc["response"])


def promote(site: Site, repo_tag: str, to: str, **kw: Any) -> None:
    repo = repo_tag.rsplit(":", 1)[0]
    with site.client() as c:
        r = c.post(
            f"/api/v1/repositories/{repo}/images/{site.digests[repo_tag]}/catalog/promote",
            json={"to": to, "reason": "reviewed", **kw},
        )
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("admission")
    data = root / "data"
    data.mkdir()
    (root / "hallmark.toml").write_text(CONFIG)
    env = {
        "HALLMARK_CONFIG": str(root / "hallmark.toml"),
        "HALLMARK_SERVER__PUBLIC_HOSTS": HOST,
        "HALLMARK_CATALOG__GATE_MAX_SEVERITY": "none",
        "HALLMARK_CATALOG__REQUIRE_COMPLETE_SCAN": "false",
    }
    srv = Server(data, env=env, access=True).start()
    try:
        s = Site(srv, ("admin", (data / "initial-admin-password").read_text().strip()), data)
        with s.client() as c:
            for repo, tags in IMAGES.items():
                for tag in tags:
                    s.digests[f"{repo}:{tag}"] = push_image(c, repo, tag)
            for repo_tag, digest in s.digests.items():
                assert wait_for(c, repo_tag.rsplit(":", 1)[0], digest, timeout=120)["status"] == "done"
        for repo_tag in ("adm/app:v1", "adm/old:v1", "adm/gone:v1", "adm/graded:v1"):
            promote(s, repo_tag, "approved")
        promote(s, "adm/old:v1", "deprecated", replacement="adm/app:v1")
        promote(s, "adm/gone:v1", "retired", replacement="adm/app:v1")
        yield s
    finally:
        srv.stop()


def test_approved_image_by_tag_and_by_digest_is_allowed(site: Site) -> None:
    body = pod("web", "shop", site.ref("adm/app:v1"))
    resp = site.validate(body)
    assert resp == {"uid": body["request"]["uid"], "allowed": True}
    assert site.validate(pod("web", "shop", site.pinned("adm/app:v1")))["allowed"] is True
    # The listen address names Hallmark too.
    assert site.validate(pod("web", "shop", f"{site.server.host}/adm/app:v1"))["allowed"] is True


def test_staging_image_is_denied_naming_the_rule_container_and_the_approved_digest(site: Site) -> None:
    resp = site.validate(pod("web", "shop", site.ref("adm/app:v2")))
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    msg = resp["status"]["message"]
    assert "container 'c0'" in msg and "[stage]" in msg and "staging, not approved" in msg
    assert f"use {site.pinned('adm/app:v1')} (approved) instead" in msg
    assert "Pod shop/web" in msg


def test_deprecated_is_allowed_with_a_warning_naming_the_replacement(site: Site) -> None:
    resp = site.validate(pod("web", "shop", site.ref("adm/old:v1")))
    assert resp["allowed"] is True
    (warning,) = resp["warnings"]
    assert "container 'c0'" in warning and "is deprecated" in warning and "use adm/app:v1 instead" in warning


def test_retired_is_denied_with_the_reason_a_pull_gets(site: Site) -> None:
    with site.client() as c:
        r = c.get("/v2/adm/gone/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 403
    pull_message = r.json()["errors"][0]["message"]
    assert "use adm/app:v1 instead" in pull_message
    resp = site.validate(pod("web", "shop", site.ref("adm/gone:v1")))
    assert resp["allowed"] is False and "[retired]" in resp["status"]["message"]
    assert pull_message in resp["status"]["message"]


def test_registries_outside_hallmark_need_the_allow_list(site: Site) -> None:
    resp = site.validate(pod("web", "shop", "nginx:1.27"))
    assert resp["allowed"] is False
    assert "[registry]" not in resp["status"]["message"]  # the registry rule names itself in words
    assert "docker.io" in resp["status"]["message"] and "allowed_registries" in resp["status"]["message"]
    assert HOST in resp["status"]["message"]  # where to push it instead
    for image in ("registry.k8s.io/pause:3.9", "ghcr.io/corp/tool:1", "ghcr.io/corp/team/x@sha256:" + "a" * 64):
        assert site.validate(pod("web", "shop", image))["allowed"] is True, image
    assert site.validate(pod("web", "shop", "ghcr.io/corpx/tool:1"))["allowed"] is False
    assert site.validate(pod("web", "shop", "ghcr.io/other/tool:1"))["allowed"] is False


def test_exempt_namespace_and_exempt_images(site: Site) -> None:
    assert site.validate(pod("dns", "kube-system", site.ref("adm/app:v2"), "nginx"))["allowed"] is True
    assert site.validate(pod("web", "shop", "busybox:1.36"))["allowed"] is True
    assert site.validate(pod("web", "shop", "busybox:1.36", "nginx"))["allowed"] is False


def test_audit_mode_allows_with_warnings_and_off_allows_silently(site: Site) -> None:
    resp = site.validate(pod("web", "legacy", site.ref("adm/app:v2"), site.ref("adm/old:v1")))
    assert resp["allowed"] is True
    warnings = resp["warnings"]
    assert any(w.startswith("audit mode, would be denied: container 'c0'") for w in warnings), warnings
    assert any("is deprecated" in w for w in warnings)
    resp = site.validate(pod("web", "dev", site.ref("adm/app:v2"), "nginx"))
    assert resp["allowed"] is True and "warnings" not in resp


def test_namespace_override_min_grade_and_max_severity(site: Site) -> None:
    """``strict-*`` asks for grade B and nothing at or above high; grades and summaries are written
    as the grading job and the matcher write them (PipelineStore.set_image)."""
    store = PipelineStore(MetadataStore(create_engine(f"sqlite:///{site.data / 'hallmark.db'}")))
    digest = site.digests["adm/graded:v1"]
    body = pod("api", "strict-payments", site.ref("adm/graded:v1"))
    resp = site.validate(body)
    assert resp["allowed"] is False and "[grade]" in resp["status"]["message"]
    assert site.validate(pod("api", "shop", site.ref("adm/graded:v1")))["allowed"] is True  # default: no grade rule
    store.set_image("adm/graded", digest, grade="D")
    msg = site.validate(body)["status"]["message"]
    assert "health grade D is below the required B" in msg
    summary = {"total": 3, "by_severity": {"critical": 0, "high": 2, "medium": 1, "low": 0, "unknown": 0}}
    store.set_image("adm/graded", digest, grade="B", summary=summary)
    msg = site.validate(body)["status"]["message"]
    assert "[grade]" not in msg and "[severity] 2 unsuppressed finding(s) at or above high (high: 2)" in msg
    store.set_image("adm/graded", digest, grade="A", summary={**summary, "by_severity": {"medium": 1}})
    assert site.validate(body)["allowed"] is True


def test_workload_templates_with_init_and_ephemeral_containers(site: Site) -> None:
    spec = pod_spec(
        [("app", site.ref("adm/app:v1"))],
        init=[("migrate", site.ref("adm/app:v2"))],
        ephemeral=[("debug", "nginx")],
    )
    for kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"):
        resp = site.validate(review(workload(kind, "shop-api", "shop", spec)))
        assert resp["allowed"] is False, kind
        msg = resp["status"]["message"]
        assert "container 'migrate' (init)" in msg and "container 'debug' (ephemeral)" in msg, (kind, msg)
        assert "container 'app'" not in msg
    ok = pod_spec([("app", site.ref("adm/app:v1"))], init=[("migrate", site.pinned("adm/app:v1"))])
    assert site.validate(review(workload("CronJob", "nightly", "shop", ok)))["allowed"] is True


def test_ephemeral_container_subresource_checks_the_new_container_only(site: Site) -> None:
    old = workload("Pod", "web-1", "shop", pod_spec([("app", site.ref("adm/gone:v1"))]))  # admitted before
    new = workload("Pod", "web-1", "shop", pod_spec([("app", site.ref("adm/gone:v1"))], ephemeral=[("debug", "nginx")]))
    resp = site.validate(review(new, "UPDATE", old=old, sub_resource="ephemeralcontainers"))
    assert resp["allowed"] is False
    assert "container 'debug' (ephemeral)" in resp["status"]["message"] and "'app'" not in resp["status"]["message"]
    fine = workload(
        "Pod",
        "web-1",
        "shop",
        pod_spec([("app", site.ref("adm/gone:v1"))], ephemeral=[("debug", site.ref("adm/app:v1"))]),
    )
    assert site.validate(review(fine, "UPDATE", old=old, sub_resource="ephemeralcontainers"))["allowed"] is True


def test_mutate_pins_every_image_to_its_digest(site: Site) -> None:
    spec = pod_spec(
        [("app", site.ref("adm/app:v1")), ("side", site.pinned("adm/old:v1")), ("pause", "registry.k8s.io/pause:3.9")],
        init=[("migrate", f"{site.server.host}/adm/app:v2")],
        ephemeral=[("debug", site.ref("adm/app:v1"))],
    )
    for kind in ("Pod", "Deployment", "CronJob"):
        body = review(workload(kind, "shop-api", "shop", spec))
        resp = site.mutate(body)
        assert resp["allowed"] is True and resp["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(resp["patch"]))
        assert {op["op"] for op in ops} == {"replace"} and len(ops) == 3, ops  # by-digest and external untouched
        patched = apply_patch(body["request"]["object"], resp["patch"])
        at: Any = patched
        for key in {"Pod": ["spec"], "Deployment": ["spec", "template", "spec"]}.get(
            kind, ["spec", "jobTemplate", "spec", "template", "spec"]
        ):
            at = at[key]
        assert [c["image"] for c in at["containers"]] == [
            site.pinned("adm/app:v1"),
            site.pinned("adm/old:v1"),
            "registry.k8s.io/pause:3.9",
        ]
        assert at["initContainers"][0]["image"] == f"{site.server.host}/adm/app@{site.digests['adm/app:v2']}"
        assert at["ephemeralContainers"][0]["image"] == site.pinned("adm/app:v1")
        # What was pinned is what the validating webhook judges: the staging init container.
        pinned_body = review(workload(kind, "shop-api", "shop", spec))
        pinned_body["request"]["object"] = patched
        msg = site.validate(pinned_body)["status"]["message"]
        assert "container 'migrate' (init)" in msg and "[stage]" in msg and "'app'" not in msg
    exempt = site.mutate(pod("dns", "kube-system", site.ref("adm/app:v1")))
    assert "patch" not in exempt


BAD_INPUT = [
    (b"{not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (
        json.dumps(
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u1"}}
        ).encode(),
        "admissionReviewVersions",
    ),
    (
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {}}}).encode(),
        "request.uid",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD_INPUT)
def test_bad_input_is_a_well_formed_denial(site: Site, body: bytes, expected: str) -> None:
    resp = site.validate(body)
    assert resp["allowed"] is False and resp["status"]["code"] == 400
    assert expected in resp["status"]["message"] and "failure_policy = fail" in resp["status"]["message"]
    assert site.mutate(body)["allowed"] is False


def test_unknown_kind_missing_tag_unparseable_and_oversized(site: Site) -> None:
    body = pod("web", "shop", site.ref("adm/app:v1"))
    body["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    resp = site.validate(body)
    assert resp["uid"] == body["request"]["uid"] and resp["allowed"] is False
    assert "kind /ConfigMap has no pod template" in resp["status"]["message"]
    resp = site.validate(pod("web", "shop", site.ref("adm/app:v9")))
    assert resp["allowed"] is False and "tag v9 of adm/app does not exist in Hallmark" in resp["status"]["message"]
    assert f"use {site.pinned('adm/app:v1')} (approved) instead" in resp["status"]["message"]
    resp = site.validate(pod("web", "shop", site.ref("adm/app@sha256:" + "0" * 64)))
    assert resp["allowed"] is False and "does not exist in Hallmark" in resp["status"]["message"]
    for bad in ("UPPER/Case:1", "app:bad tag", "app@sha256:xyz", "", "a//b"):
        resp = site.validate(pod("web", "shop", bad))
        assert resp["allowed"] is False and "is not a valid image reference" in resp["status"]["message"], bad
    big = pod("web", "shop", site.ref("adm/app:v1"))
    big["request"]["object"]["metadata"]["annotations"] = {"x": "y" * (7 << 20)}
    resp = site.validate(json.dumps(big).encode())
    assert resp["allowed"] is False and "larger than" in resp["status"]["message"] and resp["uid"] == ""


def test_cache_follows_approval_and_retirement(site: Site) -> None:
    with site.client() as c:
        digest = push_image(c, "adm/fresh", "v1")
        site.digests["adm/fresh:v1"] = digest
        assert wait_for(c, "adm/fresh", digest, timeout=120)["status"] == "done"
    body = pod("web", "shop", site.ref("adm/fresh:v1"))
    assert site.validate(body)["allowed"] is False  # staging (and now cached)
    promote(site, "adm/fresh:v1", "approved")
    assert site.validate(body)["allowed"] is True
    assert site.validate(body)["allowed"] is True
    promote(site, "adm/fresh:v1", "retired", replacement="adm/app:v1")
    resp = site.validate(body)
    assert resp["allowed"] is False and "[retired]" in resp["status"]["message"]


def test_decisions_are_audited_and_stored_per_workload(site: Site) -> None:
    body = review(
        workload("Deployment", "checkout", "shop", pod_spec([("app", site.ref("adm/app:v2"))])), uid="uid-checkout"
    )
    assert site.validate(body, cluster="prod-eu")["allowed"] is False
    engine = create_engine(f"sqlite:///{site.data / 'hallmark.db'}")
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(admission_decisions).where(
                    admission_decisions.c.cluster == "prod-eu", admission_decisions.c.name == "checkout"
                )
            )
            .mappings()
            .one()
        )
    assert (row["namespace"], row["kind"], row["uid"], row["allowed"], row["mode"]) == (
        "shop",
        "Deployment",
        "uid-checkout",
        False,
        "enforce",
    )
    (reason,) = json.loads(row["reasons"])
    assert reason["container"] == "app" and reason["rule"] == "stage" and reason["digest"] == site.digests["adm/app:v2"]
    dry = review(workload("Deployment", "dry", "shop", pod_spec([("app", site.ref("adm/app:v1"))])), dry_run=True)
    site.validate(dry, cluster="prod-eu")
    with engine.connect() as conn:
        assert conn.execute(select(admission_decisions).where(admission_decisions.c.name == "dry")).first() is None
    with site.client() as c:
        entries = c.get("/api/v1/audit", params={"action": "admission.review"}).json()
    entries = entries.get("entries", entries) if isinstance(entries, dict) else entries
    mine = [e for e in entries if (e.get("detail") or {}).get("uid") == "uid-checkout"]
    assert mine, entries
    entry = mine[0]
    assert entry["result"] == "denied" and entry["actor"] == "kubernetes:prod-eu"
    assert entry["detail"]["reasons"][0]["rule"] == "stage" and entry["detail"]["namespace"] == "shop"
    assert (entry["repository"], entry["digest"]) == ("adm/app", site.digests["adm/app:v2"])
