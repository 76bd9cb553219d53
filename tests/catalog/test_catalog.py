"""The catalog against a real ``hallmark serve`` with access control, an enterprise key and a small
advisory mirror: stages, promotion gates, the approval stamp, roles, audit, search and the CLI."""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from hallmark.signing.keys import generate_test_ca_and_leaf, write_certificates, write_test_pki
from hallmark.signing.manifest import SIGNATURE_ARTIFACT_TYPE
from tests.conftest import SHARED_DATA, PostgresServer, Server, free_port
from tests.ocihelp import push_image
from tests.pipeline.test_pipeline import EICAR, _osv_zip, image_files, wait_for

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "osv").is_dir(), reason="shared advisory snapshot not present")


@dataclass
class Site:
    server: Server
    admin: tuple[str, str]
    env: dict[str, str]  # for CLI runs on the same data folder
    advisory: str  # id of the critical advisory matched by the vulnerable image
    digests: dict[str, str]

    def client(self, auth: tuple[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30, auth=auth)


def _critical_record() -> tuple[bytes, str, str]:
    """(OSV record, package, affected version) of a CRITICAL PyPI advisory with an explicit version list."""
    from hallmark.advisories.osv import parse_record

    with zipfile.ZipFile(SHARED_DATA / "osv" / "PyPI" / "all.zip") as zf:
        for name in zf.namelist():
            raw = zf.read(name)
            rec = json.loads(raw)
            aff = rec.get("affected") or []
            if rec.get("withdrawn") or len(aff) != 1 or not aff[0].get("versions"):
                continue
            pkg = aff[0]["package"]["name"]
            if not pkg.replace("-", "").isalnum():
                continue
            try:
                adv, _, _ = parse_record(rec)
            except Exception:
                continue
            if adv.severity == "critical":
                return raw, pkg, aff[0]["versions"][0]
    raise AssertionError("no critical PyPI advisory in the snapshot")


def _leaked_secrets() -> bytes:
    """Three credentials the built-in rules rate critical (database URL, AWS and Azure keys), made
    at run time so no secret-shaped literal is committed."""
    rng = random.Random(20260311)
    alnum = string.ascii_letters + string.digits

    def pick(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    return (
        f"DATABASE_URL=postgres://app:{pick(alnum, 20)}@db.internal:5432/app\n"
        f"AWS_SECRET_ACCESS_KEY={pick(alnum + '/+', 40)}\n"
        f"AZURE_STORAGE=DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={pick(alnum + '/+', 86)}==;"
        "EndpointSuffix=core.windows.net\n"
    ).encode()


def _cli(site: Site, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hallmark", *args],
        env={**site.env, **(extra or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def site(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("catalog")
    pki = generate_test_ca_and_leaf("ec", curve="p256", common_name="Hallmark Catalog Signer")
    keys = write_test_pki(root / "keys", pki)
    store = root / "store" / "x509" / "ca" / "hallmark"
    store.mkdir(parents=True)
    write_certificates(store / "ca.crt", [pki.ca_cert])
    policy = root / "trustpolicy.json"
    policy.write_text(
        json.dumps(
            {
                "version": "1.0",
                "trustPolicies": [
                    {
                        "name": "enterprise",
                        "registryScopes": ["*"],
                        "signatureVerification": {"level": "strict"},
                        "trustStores": ["ca:hallmark"],
                        "trustedIdentities": ["*"],
                    }
                ],
            }
        )
    )
    data = root / "data"
    data.mkdir()
    env = {
        "HALLMARK_SIGNING__KEY": str(keys["key"]),
        "HALLMARK_SIGNING__CERT": str(keys["chain"]),
        "HALLMARK_SIGNING__TRUST_POLICY": str(policy),
        "HALLMARK_SIGNING__TRUST_STORE": str(root / "store"),
    }
    raw, pkg, version = _critical_record()
    advisory = json.loads(raw)["id"]
    mirror = root / "mirror"
    _osv_zip(mirror / "osv" / "PyPI" / "all.zip", [raw])
    db_url = None
    if backend == "postgres":  # the search join and compare-and-set transitions on both databases
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = pg.create_db(f"t{free_port()}")
        env["HALLMARK_DATABASE_URL"] = db_url
    srv = Server(data, db_url, env=env, access=True).start()
    cli_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HALLMARK_DATA_DIR": str(data), **env}
    try:
        admin = ("admin", (data / "initial-admin-password").read_text().strip())
        s = Site(srv, admin, cli_env, advisory, {})
        r = _cli(s, "db", "update", "--mirror", str(mirror))
        assert r.returncode == 0, r.stderr
        dist = f"usr/lib/python3/dist-packages/{pkg}-{version}.dist-info/METADATA"
        images = {
            "cat/clean": {"app/hello.txt": b"hello"},
            "cat/vuln": {dist: f"Metadata-Version: 2.1\nName: {pkg}\nVersion: {version}\n".encode()},
            "cat/bookworm": image_files("12", "bookworm"),  # no Debian 12 data in the mirror
            "cat/malware": {"app/eicar.com": EICAR},
            "cat/unsigned": {"app/other.txt": b"other"},
            "cat/leaky": {"app/.env": _leaked_secrets()},  # no package, so no vulnerability
            "cat/lowonly": {"app/readme.txt": b"nothing to see"},
        }
        # A non-root user: the only content finding left is the low-severity missing HEALTHCHECK.
        configs = {"cat/lowonly": {"config": {"User": "1000"}}}
        with s.client(admin) as c:
            for repo, files in images.items():
                s.digests[repo] = push_image(c, repo, "v1", files=files, config_extra=configs.get(repo))
            for repo, digest in s.digests.items():
                assert wait_for(c, repo, digest, timeout=60)["status"] == "done"
        yield s
    finally:
        srv.stop()


def _path(site: Site, repo: str) -> str:
    return f"/api/v1/repositories/{repo}/images/{site.digests[repo]}/catalog"


def _promote(c: httpx.Client, site: Site, repo: str, to: str, reason: str = "reviewed", **kw: Any) -> httpx.Response:
    return c.post(_path(site, repo) + "/promote", json={"to": to, "reason": reason, **kw})


def _gates(r: httpx.Response) -> dict[str, dict[str, Any]]:
    body = r.json()
    gates = body["gates"] if "gates" in body else body["error"]["detail"]["gates"]
    return {g["name"]: g for g in gates}


def test_staging_by_default_metadata_and_search(site: Site) -> None:
    with site.client(site.admin) as c:
        img = c.get(f"/api/v1/repositories/cat/clean/images/{site.digests['cat/clean']}").json()
        assert img["catalog"]["stage"] == "staging"
        entry = c.get(_path(site, "cat/clean")).json()
        assert entry["stage"] == "staging" and entry["history"] == [] and entry["image_status"] == "done"
        r = c.patch(
            _path(site, "cat/clean"),
            json={"owner": "payments", "description": "Payments base image", "support_status": "supported to 2027"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["owner"] == "payments" and r.json()["owner_kind"] == "team"
        assert c.patch(_path(site, "cat/clean"), json={"stage": "approved"}).status_code == 400  # not via PATCH

        def names(**params: str) -> set[str]:
            r = c.get("/api/v1/catalog", params=params)
            assert r.status_code == 200, r.text
            return {e["repository"] for e in r.json()["images"]}

        assert names(q="BASE image") == {"cat/clean"}
        assert names(q="payments") == {"cat/clean"}
        assert names(owner="payments") == {"cat/clean"}
        assert names(q="malw") == {"cat/malware"}
        assert names(stage="staging") == set(site.digests)
        assert names(stage="approved") == set()
        assert c.get("/api/v1/catalog", params={"stage": "gold"}).status_code == 400
    with site.client() as anon:
        assert anon.get("/api/v1/catalog").status_code == 401


def test_critical_finding_blocks_approval_until_vex_then_stamp_is_signed(site: Site) -> None:
    repo, digest = "cat/vuln", site.digests["cat/vuln"]
    with site.client(site.admin) as c:
        r = _promote(c, site, repo, "approved")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "GATE_FAILED"
        gates = _gates(r)
        assert not gates["severity"]["passed"] and "critical" in gates["severity"]["detail"]
        assert all(g["passed"] for n, g in gates.items() if n != "severity"), gates
        assert c.get(_path(site, repo)).json()["stage"] == "staging"
        vex = {
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": "https://example.com/vex/catalog",
            "author": "security@example.com",
            "timestamp": "2026-01-01T00:00:00Z",
            "version": 1,
            "statements": [
                {
                    "vulnerability": {"name": site.advisory},
                    "products": [{"@id": f"pkg:oci/vuln@{digest}"}],
                    "status": "not_affected",
                    "justification": "vulnerable_code_not_in_execute_path",
                }
            ],
        }
        r = c.post(f"/api/v1/repositories/{repo}/images/{digest}/vex", content=json.dumps(vex))
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            img = c.get(f"/api/v1/repositories/{repo}/images/{digest}").json()
            if img["status"] == "done" and img["summary"].get("suppressed"):
                break
            time.sleep(0.2)
        assert img["summary"]["suppressed"] == 1, img["summary"]
        r = _promote(c, site, repo, "approved", reason="CVE not reachable, VEX filed")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["from"] == "staging" and body["to"] == "approved" and body["entry"]["stage"] == "approved"
        assert _gates(r)["severity"]["passed"] and "1 suppressed" in _gates(r)["severity"]["detail"]
        stamp = body["signature_digest"]
        assert stamp and stamp.startswith("sha256:")
        refs = c.get(f"/v2/{repo}/referrers/{digest}", params={"artifactType": SIGNATURE_ARTIFACT_TYPE}).json()
        assert stamp in {m["digest"] for m in refs["manifests"]}
        entry = c.get(_path(site, repo)).json()
        assert entry["signature_digest"] == stamp
        (h,) = entry["history"]
        assert (h["actor"], h["from"], h["to"], h["reason"]) == (
            "admin",
            "staging",
            "approved",
            body["entry"] and "CVE not reachable, VEX filed",
        )
        assert h["signature_digest"] == stamp and h["forced"] is False
        assert {g["name"] for g in h["detail"]["gates"]} >= {"scan", "severity", "complete_scan", "malware"}
        assert c.get(f"/api/v1/repositories/{repo}/images/{digest}").json()["catalog"]["stage"] == "approved"
        # The stamp verifies under the enterprise trust policy.
        v = c.get(f"/api/v1/repositories/{repo}/images/{digest}/verification")
        assert v.status_code == 200 and v.json()["passed"], v.text
        # Audit: the refused and the successful attempt.
        deadline = time.monotonic() + 10
        results: set[str] = set()
        while time.monotonic() < deadline and results != {"allowed", "denied"}:
            entries = c.get("/api/v1/audit", params={"action": "promote", "repo": repo}).json()["entries"]
            results = {e["result"] for e in entries if e["digest"] == digest}
            time.sleep(0.2)
        assert results == {"allowed", "denied"}
        allowed = next(e for e in entries if e["result"] == "allowed")
        assert allowed["actor"] == "admin" and allowed["detail"]["signature"] == stamp


def test_missing_advisory_data_needs_force_and_reason(site: Site) -> None:
    with site.client(site.admin) as c:
        r = _promote(c, site, "cat/bookworm", "approved")
        assert r.status_code == 409
        gate = _gates(r)["complete_scan"]
        assert not gate["passed"] and "Debian:12" in gate["detail"]
        assert (
            c.post(_path(site, "cat/bookworm") + "/promote", json={"to": "approved", "force": True}).status_code == 400
        )
        r = _promote(c, site, "cat/bookworm", "approved", reason="Debian 12 feed pending; base image", force=True)
        assert r.status_code == 200, r.text
        assert "forced" in _gates(r)["complete_scan"]["detail"]
        (h,) = c.get(_path(site, "cat/bookworm")).json()["history"]
        assert h["forced"] is True and h["reason"] == "Debian 12 feed pending; base image"


def test_malware_blocks_approval_even_with_force(site: Site) -> None:
    with site.client(site.admin) as c:
        r = _promote(c, site, "cat/malware", "approved", force=True)
        assert r.status_code == 409
        gate = _gates(r)["malware"]
        assert not gate["passed"] and "eicar" in gate["detail"]


def test_transitions(site: Site) -> None:
    with site.client(site.admin) as c:
        r = _promote(c, site, "cat/clean", "deprecated")
        assert r.status_code == 409 and r.json()["error"]["code"] == "INVALID_TRANSITION"
        assert "from staging to deprecated" in r.json()["error"]["message"]
        assert _promote(c, site, "cat/clean", "approved").status_code == 200
        assert _promote(c, site, "cat/clean", "staging").status_code == 409
        assert _promote(c, site, "cat/clean", "deprecated", reason="superseded by v2").status_code == 200
        r = _promote(c, site, "cat/clean", "approved", reason="v2 withdrawn")
        assert r.status_code == 200 and r.json()["gates"], r.text  # re-approval runs the gates again
        assert _promote(c, site, "cat/clean", "retired", reason="end of life").status_code == 200
        r = _promote(c, site, "cat/clean", "approved")
        assert r.status_code == 409 and "final stage" in r.json()["error"]["message"]
        hist = c.get(_path(site, "cat/clean")).json()["history"]
        assert [(h["from"], h["to"]) for h in hist] == [
            ("staging", "approved"),
            ("approved", "deprecated"),
            ("deprecated", "approved"),
            ("approved", "retired"),
        ]
        assert {e["repository"] for e in c.get("/api/v1/catalog", params={"stage": "retired"}).json()["images"]} == {
            "cat/clean"
        }


def test_roles(site: Site) -> None:
    alice, bob = ("alice", "alice-password-1"), ("bob", "bob-password-12")
    with site.client(site.admin) as c:
        assert c.post("/api/v1/users", json={"name": alice[0], "password": alice[1]}).status_code == 201
        r = c.post("/api/v1/users", json={"name": bob[0], "password": bob[1], "roles": ["security_reviewer"]})
        assert r.status_code == 201
        for user, repo in ((alice[0], "cat/malware"), (bob[0], "cat/unsigned")):
            r = c.post(
                "/api/v1/permissions",
                json={"subject": user, "scope_kind": "repository", "scope": repo, "role": "read"},
            )
            assert r.status_code in (200, 201), r.text
    with site.client(alice) as c:
        assert c.get(_path(site, "cat/malware")).status_code == 200
        assert c.get(_path(site, "cat/vuln")).status_code == 403
        assert _promote(c, site, "cat/malware", "approved").status_code == 403
        assert c.patch(_path(site, "cat/malware"), json={"description": "mine"}).status_code == 403
        assert {e["repository"] for e in c.get("/api/v1/catalog").json()["images"]} == {"cat/malware"}
    with site.client(bob) as c:
        assert _promote(c, site, "cat/bookworm", "deprecated").status_code == 403  # reviewer, but no pull there
        r = _promote(c, site, "cat/unsigned", "retired")
        assert r.status_code == 409  # authorised; the transition itself is invalid


def test_cli_list_and_promote_with_signature_gate(site: Site) -> None:
    r = _cli(site, "catalog", "list", "--stage", "approved")
    assert r.returncode == 0, r.stderr
    assert f"cat/vuln@{site.digests['cat/vuln']}" in r.stdout and "cat/unsigned" not in r.stdout
    ref = f"cat/unsigned@{site.digests['cat/unsigned']}"
    gate_on = {"HALLMARK_CATALOG__REQUIRE_SIGNATURE_VERIFICATION": "true"}
    r = _cli(site, "catalog", "promote", ref, "--to", "approved", "--reason", "release", extra=gate_on)
    assert r.returncode == 1 and "FAIL  signature" in r.stderr, r.stderr
    with site.client(site.admin) as c:
        assert c.post(f"/api/v1/repositories/cat/unsigned/images/{site.digests['cat/unsigned']}/sign").status_code in (
            200,
            201,
        )
    r = _cli(site, "catalog", "promote", ref, "--to", "approved", "--reason", "release", extra=gate_on)
    assert r.returncode == 0, r.stderr
    assert "pass  signature" in r.stdout and "staging -> approved (signed: sha256:" in r.stdout
    with site.client(site.admin) as c:
        (h,) = c.get(_path(site, "cat/unsigned")).json()["history"]
        assert h["actor"] == "cli"
        entries = c.get("/api/v1/audit", params={"action": "promote", "actor": "cli"}).json()["entries"]
        assert {e["result"] for e in entries} == {"allowed", "denied"}


def test_leaked_secrets_block_approval_and_show_in_every_count(site: Site) -> None:
    repo, digest = "cat/leaky", site.digests["cat/leaky"]
    with site.client(site.admin) as c:
        img = c.get(f"/api/v1/repositories/{repo}/images/{digest}").json()
        assert img["summary"]["by_severity"]["critical"] == 0  # the vulnerability counts stay what they were
        combined = img["summary"]["combined"]
        assert combined["by_severity"]["critical"] == 3 and combined["content_checked"] is True
        assert combined["by_kind"]["secrets"]["critical"] == 3
        assert sum(combined["by_kind"]["vulnerabilities"].values()) == 0
        listed = c.get("/api/v1/images", params={"repository": repo}).json()["images"]
        assert [i["summary"]["combined"]["by_severity"]["critical"] for i in listed] == [3]
        (entry,) = c.get("/api/v1/catalog", params={"q": "leaky"}).json()["images"]
        assert entry["combined"]["by_severity"]["critical"] == 3
        assert c.get(_path(site, repo)).json()["combined"]["by_kind"]["secrets"]["critical"] == 3

        r = _promote(c, site, repo, "approved")
        assert r.status_code == 409 and r.json()["error"]["code"] == "GATE_FAILED", r.text
        gate = _gates(r)["severity"]
        assert not gate["passed"] and "exposed secrets 3 (critical: 3)" in gate["detail"], gate
        assert "exposed secrets" in r.json()["error"]["message"]
        assert all(g["passed"] for n, g in _gates(r).items() if n != "severity"), _gates(r)
        # Force accepts missing data (complete_scan), never findings: as for vulnerabilities.
        r = _promote(c, site, repo, "approved", reason="we rotate them later", force=True)
        assert r.status_code == 409 and not _gates(r)["severity"]["passed"], r.text
        assert c.get(_path(site, repo)).json()["stage"] == "staging"


def test_gate_threshold_counts_content_findings_by_severity(site: Site) -> None:
    gate_high = {"HALLMARK_CATALOG__GATE_MAX_SEVERITY": "high"}
    leaky = f"cat/leaky@{site.digests['cat/leaky']}"
    r = _cli(site, "catalog", "promote", leaky, "--to", "approved", "--reason", "release", extra=gate_high)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "exposed secrets 3 (critical: 3)" in r.stderr and "configuration checks 1 (high: 1)" in r.stderr, r.stderr
    low = f"cat/lowonly@{site.digests['cat/lowonly']}"
    r = _cli(site, "catalog", "promote", low, "--to", "approved", "--reason", "release", extra=gate_high)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pass  severity: no unsuppressed finding at or above high" in r.stdout
    with site.client(site.admin) as c:
        img = c.get(f"/api/v1/repositories/cat/lowonly/images/{site.digests['cat/lowonly']}").json()
        assert img["summary"]["combined"]["by_kind"]["config"]["low"] >= 1  # counted, just below the threshold
        assert img["catalog"]["stage"] == "approved"


def test_rematch_keeps_the_content_counts(site: Site) -> None:
    """Re-matching after a VEX or advisory change rebuilds the summary from the inventory alone."""
    repo, digest = "cat/leaky", site.digests["cat/leaky"]
    vex = {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.com/vex/rematch",
        "author": "security@example.com",
        "timestamp": "2026-01-01T00:00:00Z",
        "version": 1,
        "statements": [
            {
                "vulnerability": {"name": "CVE-1999-0001"},
                "status": "not_affected",
                "justification": "component_not_present",
            }
        ],
    }
    with site.client(site.admin) as c:
        since = max([e["id"] for e in c.get("/api/v1/events", params={"limit": 1000}).json()["events"]], default=0)
        r = c.post("/api/v1/vex", content=json.dumps(vex))
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = c.get("/api/v1/events", params={"since": since, "type": "advisories.rematched"}).json()["events"]
            if events:
                break
            time.sleep(0.2)
        assert events, "no re-match ran"
        combined = c.get(f"/api/v1/repositories/{repo}/images/{digest}").json()["summary"]["combined"]
        assert combined["by_kind"]["secrets"]["critical"] == 3 and combined["content_checked"] is True
