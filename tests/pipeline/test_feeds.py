"""`hallmark db update` from HTTP feeds: conditional requests, integrity, the production layouts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, free_port

TRACKER_JSON = {
    "openssl": {
        "CVE-2023-0286": {
            "description": "X.400 address type confusion in X.509 GeneralName",
            "releases": {
                "bullseye": {"status": "resolved", "fixed_version": "1.1.1n-0+deb11u4", "urgency": "high"},
                "bookworm": {"status": "resolved", "fixed_version": "3.0.8-1", "urgency": "high"},
            },
        }
    }
}


class _Feeds(BaseHTTPRequestHandler):
    root: Path
    seen: list[tuple[str, str | None, int]] = []

    def do_GET(self) -> None:
        path = (self.root / self.path.lstrip("/")).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            self.send_response(404)
            self.end_headers()
            _Feeds.seen.append((self.path, self.headers.get("If-None-Match"), 404))
            return
        data = path.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            _Feeds.seen.append((self.path, etag, 304))
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        _Feeds.seen.append((self.path, self.headers.get("If-None-Match"), 200))

    def log_message(self, *args: Any) -> None:
        pass


def _cli(data: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/bin:/bin", "HALLMARK_DATA_DIR": str(data), **env}
    return subprocess.run(
        [sys.executable, "-m", "hallmark", *args], env=full, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(not (SHARED_DATA / "osv").is_dir(), reason="shared advisory snapshot not present")
def test_update_from_http_feeds_with_conditional_requests(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "osv" / "PyPI").mkdir(parents=True)
    with (
        zipfile.ZipFile(SHARED_DATA / "osv" / "PyPI" / "all.zip") as src,
        zipfile.ZipFile(site / "osv" / "PyPI" / "all.zip", "w") as dst,
    ):
        dst.writestr("PYSEC-2019-217.json", src.read("PYSEC-2019-217.json"))
    (site / "tracker.json").write_text(json.dumps(TRACKER_JSON))
    (site / "kev.json").write_bytes((SHARED_DATA / "kev" / "known_exploited_vulnerabilities.json").read_bytes())
    _Feeds.root = site
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), _Feeds)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}"
    env = {
        "HALLMARK_ADVISORIES__OSV_URL": f"{base}/osv",
        "HALLMARK_ADVISORIES__OSV_ECOSYSTEMS": '["PyPI"]',
        "HALLMARK_ADVISORIES__DEBIAN_TRACKER_URL": f"{base}/tracker.json",
        "HALLMARK_ADVISORIES__KEV_URL": f"{base}/kev.json",
        "HALLMARK_ADVISORIES__ALPINE_SECDB_URL": f"{base}/alpine",
        "HALLMARK_ADVISORIES__ALPINE_RELEASES": '["v3.19"]',
        "HALLMARK_ADVISORIES__SECURITY_SUPPORT_URL": f"{base}/support",
        "HALLMARK_LIFECYCLE__ENDOFLIFE_URL": f"{base}/endoflife",  # 404s here: recorded, not fatal
    }
    data = tmp_path / "data"
    try:
        r = _cli(data, env, "db", "update", "--json")
        assert r.returncode == 0, r.stderr
        statuses = {f["path"]: f["status"] for f in json.loads(r.stdout)["files"]}
        assert statuses["osv/PyPI/all.zip"] == "downloaded"
        assert statuses["debian/security-tracker/tracker.json"] == "downloaded"
        assert statuses["alpine/secdb/v3.19/main.json"] == "http 404"  # recorded, not fatal
        first = [s for s in _Feeds.seen if s[0] == "/osv/PyPI/all.zip"]
        assert first == [("/osv/PyPI/all.zip", None, 200)]
        r = _cli(data, env, "db", "update")
        assert r.returncode == 0, r.stderr
        assert "from the live feeds" in r.stdout and "not modified" in r.stdout
        assert "alpine/secdb/v3.19/main.json: http 404" in r.stdout
        second = [s for s in _Feeds.seen if s[0] == "/osv/PyPI/all.zip"][1]
        assert second[1] is not None and second[2] == 304  # If-None-Match sent, 304 answered
        status = json.loads(_cli(data, env, "db", "status", "--json").stdout)
        assert len(status) == 2 and status[0]["active"]
        # The new set (hard-linked unchanged zip) matches through the production tracker JSON.
        from hallmark.advisories.index import load_snapshot
        from hallmark.advisories.matcher import match_inventory
        from hallmark.model import Distro, Package

        idx = load_snapshot(data / "advisories" / status[0]["sources"]["folder"])
        pkgs = [
            Package("libssl1.1", "1.1.1n-0+deb11u3", "Debian", source_name="openssl"),
            Package("jinja2", "2.10", "PyPI"),
        ]
        res = match_inventory(idx, pkgs, Distro("debian", "11", "bullseye"))
        found = {(f.package, f.advisory_id) for f in res.findings}
        assert ("jinja2", "PYSEC-2019-217") in found
        ssl = next(f for f in res.findings if f.package == "libssl1.1")
        assert "CVE-2023-0286" in (ssl.advisory_id, *ssl.aliases)
        assert ssl.fixed_versions == ["1.1.1n-0+deb11u4"] and ssl.ecosystem == "Debian:11"
        assert ssl.kev is False  # not in the KEV catalogue of the snapshot
    finally:
        srv.shutdown()


@pytest.mark.skipif(not (SHARED_DATA / "alpine").is_dir(), reason="shared advisory snapshot not present")
def test_mirror_update_takes_every_feed_of_the_offline_layout(tmp_path: Path) -> None:
    r = _cli(
        tmp_path / "data",
        {"HALLMARK_ADVISORIES__OSV_ECOSYSTEMS": '["Go"]'},
        "db",
        "update",
        "--json",
        "--mirror",
        str(SHARED_DATA),
    )
    assert r.returncode == 0, r.stderr
    statuses = {f["path"]: f["status"] for f in json.loads(r.stdout)["files"]}
    for expected in (
        "alpine/secdb/v3.11/main.json",
        "debian/security-support/security-support-ended.deb11",
        "debian/security-tracker/data/DSA/list",
        "kev/known_exploited_vulnerabilities.json",
        "osv/Go/all.zip",
    ):
        assert statuses.get(expected) == "copied", expected
