"""Push -> index -> SBOM referrers -> match -> report, through a real server and the real advisory snapshot."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SHARED_DATA, Server
from tests.ocihelp import push_image

DPKG_STATUS = b"""Package: libssl1.1
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 4000
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Multi-Arch: same
Source: openssl
Version: 1.1.1n-0+deb11u3
Description: Secure Sockets Layer toolkit - shared libraries

"""


def image_files(version_id: str, codename: str) -> dict[str, bytes]:
    return {
        "etc/os-release": f'ID=debian\nVERSION_ID="{version_id}"\nVERSION_CODENAME={codename}\n'.encode(),
        "var/lib/dpkg/status": DPKG_STATUS,
        "usr/lib/python3/dist-packages/Jinja2-2.10.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\n"
        ),
    }


def hallmark_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HALLMARK_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin"}
    if server.db_url:
        env["HALLMARK_DATABASE_URL"] = server.db_url
    return subprocess.run(
        [sys.executable, "-m", "hallmark", *args], env=env, capture_output=True, text=True, timeout=300
    )


def wait_for(
    client: httpx.Client, repo: str, digest: str, status: str = "done", timeout: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/repositories/{repo}/images/{digest}")
        if r.status_code == 200:
            last = r.json()
            if last["status"] == status or last["status"] == "failed":
                return last
        time.sleep(0.2)
    raise AssertionError(f"image never reached {status}: {last}")


@pytest.mark.skipif(not (SHARED_DATA / "osv").is_dir(), reason="shared advisory snapshot not present")
def test_push_is_indexed_matched_and_reported(server: Server) -> None:
    r = hallmark_cli(server, "db", "update", "--mirror", str(SHARED_DATA))
    assert r.returncode == 0, r.stderr
    assert "advisory set" in r.stdout
    with httpx.Client(base_url=server.url, timeout=30) as c:
        d11 = push_image(c, "pipeline/bullseye", "v1", files=image_files("11", "bullseye"))
        d12 = push_image(c, "pipeline/bookworm", "v1", files=image_files("12", "bookworm"))
        img = wait_for(c, "pipeline/bullseye", d11)
        assert img["status"] == "done", img
        assert img["distro"]["id"] == "debian" and img["package_count"] == 2
        assert img["tags"] == ["v1"]
        report = c.get(f"/api/v1/repositories/pipeline/bullseye/images/{d11}/reports/vulnerabilities").json()
        by_pkg: dict[str, list[dict[str, Any]]] = {}
        for f in report["findings"]:
            by_pkg.setdefault(f["package"], []).append(f)
        # Debian matches the *source* package (openssl) and release (Debian:11).
        ssl = {f["advisory_id"]: f for f in by_pkg["libssl1.1"]}
        assert "DSA-5343-1" in ssl
        assert ssl["DSA-5343-1"]["fixed_versions"] == ["1.1.1n-0+deb11u4"]
        assert ssl["DSA-5343-1"]["status"] == "fixed"
        assert ssl["DSA-5343-1"]["ecosystem"] == "Debian:11"
        jinja = {f["advisory_id"] for f in by_pkg["jinja2"]}
        assert "PYSEC-2019-217" in jinja
        assert report["unsupported_releases"] == []
        assert img["summary"]["total"] == len(report["findings"])
        # Reports and SBOMs are attached as referrers of the image.
        refs = c.get(f"/v2/pipeline/bullseye/referrers/{d11}").json()["manifests"]
        types = sorted(m["artifactType"] for m in refs)
        assert types == [
            "application/spdx+json",
            "application/vnd.cyclonedx+json",
            "application/vnd.hallmark.content-report.v1+json",
            "application/vnd.hallmark.vulnerability-report.v1+json",
        ]
        sbom = c.get(f"/api/v1/repositories/pipeline/bullseye/images/{d11}/reports/sbom-cyclonedx").json()
        assert {comp["name"] for comp in sbom["components"]} >= {"libssl1.1", "jinja2"}
        # Bookworm: no Debian 12 data in the snapshot -> said so, never "clean".
        img12 = wait_for(c, "pipeline/bookworm", d12)
        rep12 = c.get(f"/api/v1/repositories/pipeline/bookworm/images/{d12}/reports/vulnerabilities").json()
        assert rep12["unsupported_releases"] == ["Debian:12"]
        assert rep12["complete"] is False
        assert any("Debian:12" in n for n in rep12["notes"])
        assert not any(f["package"] == "libssl1.1" for f in rep12["findings"])
        assert img12["summary"]["complete"] is False
        # Artifacts are not indexed themselves.
        for m in refs:
            assert c.get(f"/api/v1/repositories/pipeline/bullseye/images/{m['digest']}").status_code == 404


def _osv_zip(path: Path, records: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for i, rec in enumerate(records):
            try:
                name = f"{json.loads(rec)['id']}.json"
            except ValueError:
                name = f"bad-{i}.json"
            zf.writestr(name, rec)


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Hook.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(not (SHARED_DATA / "osv").is_dir(), reason="shared advisory snapshot not present")
def test_rematch_on_advisory_update_without_reading_layers(tmp_path: Path) -> None:
    from tests.conftest import free_port

    hook = HTTPServer(("127.0.0.1", free_port()), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(
        data,
        env={
            "HALLMARK_ADVISORIES__WEBHOOKS": json.dumps([f"http://127.0.0.1:{hook.server_port}/hook"]),
            "HALLMARK_ADVISORIES__WEBHOOK_SECRET": "s3cret-hmac-key",
        },
    ).start()
    try:
        with zipfile.ZipFile(SHARED_DATA / "osv" / "PyPI" / "all.zip") as zf:
            jinja = zf.read("PYSEC-2019-217.json")
            other = zf.read(sorted(n for n in zf.namelist() if "jinja" not in zf.read(n).decode().lower())[0])
        mirror = tmp_path / "mirror"
        _osv_zip(mirror / "osv" / "PyPI" / "all.zip", [other, b"{not json"])
        env_run = lambda *a: hallmark_cli(srv, *a)  # noqa: E731
        r = env_run("db", "update", "--mirror", str(mirror))
        assert r.returncode == 0, r.stderr
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            digest = push_image(c, "rematch/app", "v1", files=image_files("11", "bullseye"))
            wait_for(c, "rematch/app", digest)
            rep = c.get(f"/api/v1/repositories/rematch/app/images/{digest}/reports/vulnerabilities").json()
            assert not any(f["package"] == "jinja2" for f in rep["findings"])
            # Remove the layers from the blob store: re-matching must not need them.
            for blob in (data / "blobs" / "blobs" / "sha256").glob("*/*"):
                if blob.stat().st_size > 100 and blob.read_bytes()[:2] == b"\x1f\x8b":
                    blob.unlink()
            _osv_zip(mirror / "osv" / "PyPI" / "all.zip", [other, jinja])
            r = env_run("db", "update", "--mirror", str(mirror))
            assert r.returncode == 0, r.stderr
            deadline = time.monotonic() + 60
            changed: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not changed:
                events = c.get("/api/v1/events", params={"type": "image.findings_changed"}).json()["events"]
                changed = [e for e in events if e["digest"] == digest]
                time.sleep(0.2)
            assert changed, "no findings_changed event"
            assert any("PYSEC-2019-217|jinja2|2.10" == k for k in changed[0]["payload"]["new"])
            rep = c.get(f"/api/v1/repositories/rematch/app/images/{digest}/reports/vulnerabilities").json()
            assert any(f["advisory_id"] == "PYSEC-2019-217" for f in rep["findings"])
            sets = c.get("/api/v1/advisories").json()["sets"]
            assert len(sets) == 2 and sets[0]["active"] and not sets[1]["active"]
            stats = sets[1]["sources"]["stats"]
            assert any(s.get("skipped") for s in stats), stats  # the corrupt member was counted, not fatal
        # Webhook: retried after a 503, HMAC-signed.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _Hook.received:
            time.sleep(0.2)
        assert _Hook.received
        headers, body = _Hook.received[0]
        expected = "sha256=" + hmac.new(b"s3cret-hmac-key", body, hashlib.sha256).hexdigest()
        assert headers["X-Hallmark-Signature"] == expected
        assert json.loads(body)["event"] == "image.findings_changed"
    finally:
        srv.stop()
        hook.shutdown()


def test_db_update_failure_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data)
    mirror = tmp_path / "mirror"
    (mirror / "osv" / "PyPI").mkdir(parents=True)
    (mirror / "osv" / "PyPI" / "all.zip").write_bytes(b"this is not a zip")
    r = hallmark_cli(srv, "db", "update", "--mirror", str(mirror))
    assert r.returncode == 1 and "not a zip" in r.stderr
    r = hallmark_cli(srv, "db", "update", "--mirror", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = hallmark_cli(srv, "db", "status", "--json")
    assert json.loads(r.stdout) == []
    assert not [p for p in (data / "advisories").iterdir()] if (data / "advisories").exists() else True
    _ = io


EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR" + b"-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def test_content_checks_ride_along_on_indexing(tmp_path: Path) -> None:
    import zipfile as zf_mod

    from tests.ocihelp import OCI_MANIFEST, image, push_blob, push_manifest, tar_layer

    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        secret_url = b"DATABASE_URL=postgres://appuser:Zx9vQ2mR7pLk4sT8@db.internal:5432/app\n"
        zbuf = io.BytesIO()
        with zf_mod.ZipFile(zbuf, "w") as z:
            z.writestr("inner/eicar.com", EICAR)
        base = tar_layer({"etc/os-release": b'ID=debian\nVERSION_ID="11"\n', "app/.env": secret_url})
        top = tar_layer({"app/.wh..env": b"", "app/payload.zip": zbuf.getvalue()})
        config, manifest = image([base, top], config_extra={"config": {"Env": ["PATH=/usr/bin"]}})
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for blob in (base, top, config):
                push_blob(c, "content/app", blob)
            assert push_manifest(c, "content/app", "v1", manifest, OCI_MANIFEST).status_code == 201
            digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
            img = wait_for(c, "content/app", digest)
            assert img["status"] == "done", img
            rep = c.get(f"/api/v1/repositories/content/app/images/{digest}/reports/content").json()
            kinds = {(f["kind"], f.get("status")) for f in rep["findings"]}
            secrets = [f for f in rep["findings"] if f["kind"] == "secret"]
            assert secrets, rep["findings"]
            assert secrets[0]["status"] == "removed" and secrets[0]["removed_in_layer"] == 1
            assert "Zx9vQ2mR7pLk4sT8" not in json.dumps(rep)  # never the secret itself
            malware = [f for f in rep["findings"] if f["kind"] == "malware"]
            assert any("payload.zip!" in f["path"] for f in malware), kinds
            assert any(f["rule_id"] == "root-user" for f in rep["findings"] if f["kind"] == "config")
            assert img["summary"]["content"]["total"] == len(rep["findings"])
            sarif = c.get(
                f"/api/v1/repositories/content/app/images/{digest}/reports/vulnerabilities", params={"format": "sarif"}
            )
            assert sarif.status_code == 200
            assert any(r["ruleId"] for r in sarif.json()["runs"][0]["results"])
    finally:
        srv.stop()


def test_image_api_respects_repository_permissions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data, access=True).start()
    try:
        admin = ("admin", (data / "initial-admin-password").read_text().strip())
        with httpx.Client(base_url=srv.url, timeout=30, auth=admin) as c:
            da = push_image(c, "teama/app", "v1")
            db = push_image(c, "teamb/app", "v1")
            assert c.post("/api/v1/users", json={"name": "alice", "password": "alice-password-1"}).status_code == 201
            r = c.post(
                "/api/v1/permissions",
                json={"subject": "alice", "scope_kind": "repository", "scope": "teama/app", "role": "read"},
            )
            assert r.status_code in (200, 201), r.text
            wait_for(c, "teama/app", da)
            wait_for(c, "teamb/app", db)
        with httpx.Client(base_url=srv.url, timeout=30, auth=("alice", "alice-password-1")) as c:
            assert c.get(f"/api/v1/repositories/teama/app/images/{da}").status_code == 200
            assert c.get(f"/api/v1/repositories/teama/app/images/{da}/reports/sbom-spdx").status_code == 200
            assert c.get(f"/api/v1/repositories/teamb/app/images/{db}").status_code == 403
            assert c.get(f"/api/v1/repositories/teamb/app/images/{db}/reports/vulnerabilities").status_code == 403
            assert c.post(f"/api/v1/repositories/teama/app/images/{da}/rescan").status_code == 403
            listed = {i["repository"] for i in c.get("/api/v1/images").json()["images"]}
            assert listed == {"teama/app"}
            assert {e["repository"] for e in c.get("/api/v1/events").json()["events"]} <= {"teama/app", None}
        with httpx.Client(base_url=srv.url, timeout=30) as anon:
            assert anon.get(f"/api/v1/repositories/teama/app/images/{da}").status_code == 401
    finally:
        srv.stop()


@pytest.mark.skipif(not (SHARED_DATA / "osv").is_dir(), reason="shared advisory snapshot not present")
def test_vex_upload_suppresses_but_keeps_findings_visible(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        with zipfile.ZipFile(SHARED_DATA / "osv" / "PyPI" / "all.zip") as zf:
            jinja = zf.read("PYSEC-2019-217.json")
        mirror = tmp_path / "mirror"
        _osv_zip(mirror / "osv" / "PyPI" / "all.zip", [jinja])
        assert hallmark_cli(srv, "db", "update", "--mirror", str(mirror)).returncode == 0
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            digest = push_image(c, "vex/app", "v1", files=image_files("11", "bullseye"))
            img = wait_for(c, "vex/app", digest)
            assert img["summary"]["total"] >= 1
            before = img["summary"]["total"]
            vex = {
                "@context": "https://openvex.dev/ns/v0.2.0",
                "@id": "https://example.com/vex/1",
                "author": "security@example.com",
                "timestamp": "2026-01-01T00:00:00Z",
                "version": 1,
                "statements": [
                    {
                        "vulnerability": {"name": "CVE-2019-10906"},
                        "products": [{"@id": f"pkg:oci/app@{digest}"}],
                        "status": "not_affected",
                        "justification": "vulnerable_code_not_in_execute_path",
                    }
                ],
            }
            r = c.post(f"/api/v1/repositories/vex/app/images/{digest}/vex", content=json.dumps(vex))
            assert r.status_code == 201, r.text
            bad = c.post("/api/v1/vex", content=b"{not json")
            assert bad.status_code == 400
            deadline = time.monotonic() + 60
            finding: dict[str, Any] = {}
            while time.monotonic() < deadline:
                rep = c.get(f"/api/v1/repositories/vex/app/images/{digest}/reports/vulnerabilities").json()
                finding = next(f for f in rep["findings"] if f["advisory_id"] == "PYSEC-2019-217")
                if finding.get("suppressed"):
                    break
                time.sleep(0.2)
            assert finding.get("suppressed"), finding
            assert finding["suppressed"]["justification"] == "vulnerable_code_not_in_execute_path"
            assert finding["suppressed"]["by"] == "security@example.com"
            img = c.get(f"/api/v1/repositories/vex/app/images/{digest}").json()
            assert img["summary"]["total"] == before - 1
            assert img["summary"]["suppressed"] == 1
            docs = c.get("/api/v1/vex").json()["documents"]
            assert len(docs) == 1 and docs[0]["repo_name"] == "vex/app" and docs[0]["uploaded_by"]
    finally:
        srv.stop()
