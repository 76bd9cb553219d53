"""Pull-through cache against real parts: Debian's ``docker-registry`` (the CNCF registry, htpasswd basic
auth) as the upstream behind a counting forwarder, a second Hallmark (Bearer tokens) as another upstream,
a corrupting upstream, skopeo pulling through a Hallmark with access control on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from tests.conftest import Server, free_port
from tests.index.imagebuilder import build_image, write_layout
from tests.ocihelp import OCI_INDEX, OCI_MANIFEST, image, push_blob, push_manifest, sha256, tar_layer, write_oci_layout
from tests.pipeline.test_pipeline import wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("skopeo") is None or shutil.which("docker-registry") is None,
    reason="skopeo and docker-registry come with `make debs`",
)
UP_USER, UP_PASS = "upuser", "up-Secret-Pass-7"
SECRET_ENV = b"DATABASE_URL=postgres://appuser:Zx9vQ2mR7pLk4sT8@db.internal:5432/app\n"
ACCEPT = {"Accept": OCI_MANIFEST}


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


class Forwarder:
    """A plain-HTTP hop in front of the upstream that counts what Hallmark asks it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        fwd = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                with fwd.lock:
                    fwd.seen.append((self.command, self.path))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")}
                try:
                    r = httpx.request(self.command, fwd.target + self.path, headers=headers, timeout=30)
                except httpx.HTTPError:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() in ("content-type", "docker-content-digest", "www-authenticate", "location"):
                        self.send_header(k, v)
                length = r.headers.get("content-length", str(len(r.content)))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.content)

            do_GET = do_HEAD = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


@dataclass
class BadImage:
    layer: bytes
    config: bytes
    manifest: bytes


class BadUpstream:
    """Serves a valid manifest whose blob comes back wrong, truncated, or a manifest that is too big,
    lies about its digest, or redirects forever (repository name = the fault)."""

    def __init__(self) -> None:
        self.layer = tar_layer({"etc/bad": b"bad" * 1000})
        self.config, self.manifest = image([self.layer])
        self.seen: list[str] = []
        self.manifests: dict[str, bytes] = {}  # fault -> manifest served instead (its blobs: 404)
        self.authorization: list[tuple[str, str | None]] = []  # (path, Authorization header)
        bad = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str], length: int | None = None) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                bad.seen.append(self.path)
                bad.authorization.append((self.path, self.headers.get("Authorization")))
                if self.path.startswith("/cdn/"):  # another origin (localhost): blob storage
                    data = bad.config if self.path[5:] == sha256(bad.config) else bad.layer
                    return self._send(200, data, {})
                parts = self.path.split("/")  # /v2/x/<fault>/<kind>/<ref>
                if len(parts) < 6:
                    return self._send(200, b"{}", {})
                fault, kind, ref = parts[3], parts[4], parts[5]
                if fault in bad.manifests:
                    body = bad.manifests[fault]
                    if kind == "manifests":
                        return self._send(200, body, {"Content-Type": OCI_MANIFEST})
                    return self._send(404, b"", {})
                if fault == "loop":
                    return self._send(302, b"", {"Location": self.path})
                if fault == "cdn":  # wants Basic credentials, then sends blobs to another origin
                    if self.headers.get("Authorization") is None:
                        return self._send(401, b"", {"WWW-Authenticate": 'Basic realm="bad"'})
                    if kind == "blobs":
                        port = bad.httpd.server_address[1]
                        return self._send(307, b"", {"Location": f"http://localhost:{port}/cdn/{ref}"})
                if kind == "manifests":
                    if fault == "huge":
                        return self._send(200, b" " * (5 << 20), {"Content-Type": OCI_MANIFEST})
                    digest = sha256(bad.manifest)
                    if fault == "lying":
                        digest = sha256(b"something else")
                    headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}
                    return self._send(200, bad.manifest, headers)
                data = bad.config if ref == sha256(bad.config) else bad.layer
                if fault == "wrongbytes" and data is bad.layer:
                    return self._send(200, bytes(len(data)), {})
                if fault == "truncated" and data is bad.layer:
                    self.close_connection = True
                    return self._send(200, data[: len(data) // 2], {}, length=len(data))
                return self._send(200, data, {})

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@dataclass
class Site:
    hallmark: Server
    admin: tuple[str, str]
    upstream_host: str
    forwarder: Forwarder
    bad: BadUpstream
    registry: subprocess.Popen[bytes]
    second: Server
    second_admin: tuple[str, str]
    digests: dict[str, str] = field(default_factory=dict)

    def client(self, auth: tuple[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.hallmark.url, timeout=60, auth=auth or self.admin)

    def pull(self, ref: str, dest: Path) -> subprocess.CompletedProcess[str]:
        creds = f"{self.admin[0]}:{self.admin[1]}"
        src = f"docker://{self.hallmark.host}/{ref}"
        return skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, src, f"oci:{dest}:x")


def start_registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"{UP_USER}:{bcrypt.hashpw(UP_PASS.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'store'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: test-secret}}\n"
        f"auth: {{htpasswd: {{realm: upstream, path: {htpasswd}}}}}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=open(root / "registry.log", "wb")
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 401:
                return proc, f"127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError((root / "registry.log").read_text())


def push_upstream(host: str, repo: str, tag: str, files: dict[str, bytes]) -> str:
    """Push one image straight into the upstream (basic auth), returning its manifest digest."""
    layer = tar_layer(files)
    config, manifest = image([layer])
    with httpx.Client(base_url=f"http://{host}", auth=(UP_USER, UP_PASS), timeout=30) as c:
        for blob in (layer, config):
            r = c.post(f"/v2/{repo}/blobs/uploads/")  # the CNCF registry has no one-request upload
            assert r.status_code == 202, r.text
            url = httpx.URL(r.headers["Location"]).copy_merge_params({"digest": sha256(blob)})
            r = c.put(url, content=blob)
            assert r.status_code == 201, r.text
        r = push_manifest(c, repo, tag, manifest)
        assert r.status_code == 201, r.text
    return sha256(manifest)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("proxy")
    registry, up_host = start_registry(root)
    forwarder = Forwarder(f"http://{up_host}")
    bad = BadUpstream()
    (root / "second").mkdir()
    second = Server(root / "second", access=True).start()
    second_admin = ("admin", (root / "second" / "initial-admin-password").read_text().strip())
    (root / "data").mkdir()
    config = root / "hallmark.toml"
    config.write_text(
        f"""
[[mirror.proxy]]
namespace = "hub"
upstream = "{forwarder.url}"
username = "{UP_USER}"
password = "{UP_PASS}"
repositories = ["library/*"]
tag_ttl_seconds = 3600
insecure = true

[[mirror.proxy]]
namespace = "fresh"
upstream = "{forwarder.url}"
username = "{UP_USER}"
password = "{UP_PASS}"
tag_ttl_seconds = 0
insecure = true

[[mirror.proxy]]
namespace = "bad"
upstream = "{bad.url}"
timeout_seconds = 5
insecure = true

[[mirror.proxy]]
namespace = "badauth"
upstream = "{bad.url}"
username = "cdnuser"
password = "cdn-Secret-Pass-9"
insecure = true

[[mirror.proxy]]
namespace = "hm2"
upstream = "{second.url}"
username = "{second_admin[0]}"
password = "{second_admin[1]}"
insecure = true
"""
    )
    env = {
        "HALLMARK_CONFIG": str(config),
        "HALLMARK_CATALOG__GATE_MAX_SEVERITY": "none",
        "HALLMARK_CATALOG__REQUIRE_COMPLETE_SCAN": "false",
    }
    hallmark = Server(root / "data", env=env, access=True).start()
    admin = ("admin", (root / "data" / "initial-admin-password").read_text().strip())
    try:
        yield Site(hallmark, admin, up_host, forwarder, bad, registry, second, second_admin)
    finally:
        hallmark.stop()
        second.stop()
        registry.terminate()
        registry.wait(10)
        forwarder.httpd.shutdown()
        bad.httpd.shutdown()


def test_pull_through_stores_scans_and_serves_the_second_pull_locally(site: Site, tmp_path: Path) -> None:
    layers = [tar_layer({"etc/os-release": b'ID=debian\nVERSION_ID="12"\n', "app/.env": SECRET_ENV})]
    src = tmp_path / "src"
    digest = write_oci_layout(src, "v1", layers)
    creds = f"{UP_USER}:{UP_PASS}"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds,
        f"oci:{src}:v1",
        f"docker://{site.upstream_host}/library/app:v1",
    )

    site.pull("hub/library/app:v1", tmp_path / "out")
    out = json.loads((tmp_path / "out" / "index.json").read_text())
    assert out["manifests"][0]["digest"] == digest
    for layer in layers:
        assert (tmp_path / "out" / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()).read_bytes() == layer
    with site.client() as c:
        img = wait_for(c, "hub/library/app", digest, timeout=120)  # stored with the push's call: indexed
        assert img["status"] == "done", img
        assert img["tags"] == ["v1"]
        rep = c.get(f"/api/v1/repositories/hub/library/app/images/{digest}/reports/content").json()
        assert any(f["kind"] == "secret" for f in rep["findings"]), rep["findings"]
        entry = c.get(f"/api/v1/repositories/hub/library/app/images/{digest}/catalog").json()
        assert entry["stage"] == "staging", entry
        body = json.dumps(c.get("/api/v1/repositories/hub/library/app").json())
        assert UP_PASS not in body
    log = (site.hallmark.data_dir.parent / f"server-{site.hallmark.port}.log").read_text()
    assert UP_PASS not in log

    before = site.forwarder.count()
    site.pull("hub/library/app:v1", tmp_path / "again")  # tag fresh (ttl 3600), blobs local
    assert site.forwarder.count() == before, site.forwarder.seen[before:]
    assert (tmp_path / "again" / "index.json").read_text() == (tmp_path / "out" / "index.json").read_text()


def test_no_pull_permission_means_no_upstream_request_and_pushes_are_refused(site: Site) -> None:
    push_upstream(site.upstream_host, "library/secretapp", "v1", {"a": b"1"})
    with site.client() as c:
        assert c.post("/api/v1/users", json={"name": "mallory", "password": "mallory-Secret-1"}).status_code == 201
    before = site.forwarder.count()
    for auth in (("mallory", "mallory-Secret-1"), None):
        with httpx.Client(base_url=site.hallmark.url, timeout=30, auth=auth) as c:
            for path in ("manifests/v1", f"blobs/{sha256(b'x')}"):
                r = c.get(f"/v2/hub/library/secretapp/{path}", headers=ACCEPT)
                assert r.status_code in (401, 403), r.text
    assert site.forwarder.count() == before
    # Outside the allow-list (hub allows library/* only): a plain miss, nothing asked upstream.
    with site.client() as c:
        assert c.get("/v2/hub/other/app/manifests/v1", headers=ACCEPT).status_code == 404
        assert site.forwarder.count() == before
        layer = tar_layer({"x": b"y"})
        r = c.post("/v2/hub/library/app/blobs/uploads/", params={"digest": sha256(layer)}, content=layer)
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
        r = push_manifest(c, "hub/library/app", "v9", image([layer])[1])
        assert r.status_code == 403 and "pull-through" in r.text, r.text


def test_a_tag_moved_upstream_is_seen_after_the_ttl(site: Site) -> None:
    old = push_upstream(site.upstream_host, "library/mv", "v1", {"f": b"old"})
    with site.client() as c:
        for ns in ("hub", "fresh"):
            r = c.get(f"/v2/{ns}/library/mv/manifests/v1", headers=ACCEPT)
            assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == old
            assert wait_for(c, f"{ns}/library/mv", old, timeout=120)["status"] == "done"
        new = push_upstream(site.upstream_host, "library/mv", "v1", {"f": b"new"})
        before = site.forwarder.count()
        r = c.get("/v2/hub/library/mv/manifests/v1", headers=ACCEPT)  # ttl not over: the cached tag
        assert r.headers["Docker-Content-Digest"] == old and site.forwarder.count() == before
        r = c.get("/v2/fresh/library/mv/manifests/v1", headers=ACCEPT)  # ttl 0: checked, moved
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == new
        assert site.forwarder.seen[before][0] == "HEAD"
        assert wait_for(c, "fresh/library/mv", new, timeout=120)["status"] == "done"
        assert c.get(f"/api/v1/repositories/fresh/library/mv/images/{new}").json()["tags"] == ["v1"]
        before = site.forwarder.count()
        r = c.get("/v2/fresh/library/mv/manifests/v1", headers=ACCEPT)  # unchanged: one HEAD only
        assert r.headers["Docker-Content-Digest"] == new
        assert [m for m, _ in site.forwarder.seen[before:]] == ["HEAD"]


def test_bearer_token_upstream(site: Site, tmp_path: Path) -> None:
    with httpx.Client(base_url=site.second.url, timeout=30, auth=site.second_admin) as c:
        digest = push_upstream_hallmark(c)
    site.pull("hm2/team/app:v1", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "index.json").read_text())["manifests"][0]["digest"] == digest
    with site.client() as c:
        assert wait_for(c, "hm2/team/app", digest, timeout=120)["status"] == "done"


def push_upstream_hallmark(c: httpx.Client) -> str:
    layer = tar_layer({"etc/team": b"team"})
    config, manifest = image([layer])
    for blob in (layer, config):
        push_blob(c, "team/app", blob)
    assert push_manifest(c, "team/app", "v1", manifest).status_code == 201
    return sha256(manifest)


def wait_requests(bad: BadUpstream, path: str, n: int) -> None:
    """Until the upstream has seen ``path`` asked ``n`` times (the completion task's request is the
    last), plus a moment for Hallmark to handle the answer."""
    deadline = time.monotonic() + 60
    while bad.seen.count(path) < n:
        assert time.monotonic() < deadline, bad.seen
        time.sleep(0.05)
    time.sleep(0.3)


@pytest.mark.parametrize("fault", ["wrongbytes", "truncated", "loop", "huge", "lying"])
def test_a_corrupting_upstream_stores_and_serves_nothing_corrupt(site: Site, fault: str) -> None:
    bad = site.bad
    repo = f"bad/x/{fault}"
    layer_digest = sha256(bad.layer)
    with site.client() as c:
        r = c.get(f"/v2/{repo}/manifests/v1", headers=ACCEPT)
        if fault in ("loop", "huge", "lying"):
            assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
        else:
            assert r.status_code == 200 and r.content == bad.manifest
            try:
                got = c.get(f"/v2/{repo}/blobs/{layer_digest}")
            except httpx.RemoteProtocolError:  # cut short of its length: never taken for whole
                pass
            else:  # refused before any byte went out
                assert got.status_code == 503 and got.json()["errors"][0]["code"] == "UNAVAILABLE", got.text
        # The completion task gives up too: no manifest, no corrupt blob on disk.
        if fault in ("wrongbytes", "truncated"):
            wait_requests(bad, f"/v2/x/{fault}/blobs/{layer_digest}", 2)
        assert c.get(f"/api/v1/repositories/{repo}/images/{sha256(bad.manifest)}").status_code == 404
        r = c.get(f"/v2/{repo}/tags/list")
        assert r.status_code == 404 or r.json()["tags"] in ([], None), r.text
    assert not (site.hallmark.data_dir / "blobs" / "blobs" / "sha256" / layer_digest[7:9] / layer_digest[7:]).exists()


def test_an_upstream_cannot_name_a_private_blob_into_the_cache(site: Site) -> None:
    private = tar_layer({"secret/plan": b"private layer of another team"})
    with site.client() as c:
        push_image_layers = (private, image([private])[0])
        for blob in push_image_layers:
            push_blob(c, "private/app", blob)
        assert push_manifest(c, "private/app", "v1", image([private])[1]).status_code == 201
        site.bad.manifests["steal"] = image([private])[1]  # the upstream "has" that layer
        r = c.get("/v2/bad/x/steal/manifests/v1", headers=ACCEPT)
        assert r.status_code == 200
        r = c.get(f"/v2/bad/x/steal/blobs/{sha256(private)}")
        assert r.status_code == 404 and private not in r.content, r.text
        wait_requests(site.bad, f"/v2/x/steal/blobs/{sha256(image([private])[0])}", 1)  # the task tried: 404
        assert c.get(f"/v2/bad/x/steal/blobs/{sha256(private)}").status_code == 404
        assert c.get("/v2/bad/x/steal/manifests/v1", headers=ACCEPT).status_code == 200  # still only upstream's
        assert c.get(f"/api/v1/repositories/bad/x/steal/images/{sha256(image([private])[1])}").status_code == 404


def test_an_index_is_cached_with_every_platform(site: Site, tmp_path: Path) -> None:
    images = {
        "amd": build_image([(tar_layer({"etc/arch": b"amd64"}), None)], arch="amd64"),
        "arm": build_image([(tar_layer({"etc/arch": b"arm64"}), None)], arch="arm64"),
    }
    write_layout(str(tmp_path / "src"), images, index_platforms={"amd": "linux/amd64", "arm": "linux/arm64"})
    creds = f"{UP_USER}:{UP_PASS}"
    dest = f"docker://{site.upstream_host}/library/multi:v1"
    skopeo("copy", "--all", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{tmp_path / 'src'}:multi", dest)
    site.pull("hub/library/multi:v1", tmp_path / "out")  # one platform, as clients do
    with site.client() as c:
        deadline = time.monotonic() + 60
        while c.get("/v2/hub/library/multi/tags/list").json().get("tags") != ["v1"]:
            assert time.monotonic() < deadline, "the index was never stored"
            time.sleep(0.2)
        before = site.forwarder.count()
        index = c.get("/v2/hub/library/multi/manifests/v1", headers={"Accept": OCI_INDEX})
        assert index.status_code == 200 and index.headers["Content-Type"] == OCI_INDEX
        for img in images.values():  # the platform nobody pulled is there too, with its blobs
            assert c.get(f"/v2/hub/library/multi/manifests/{img.digest}", headers=ACCEPT).content == img.manifest
            for digest, blob in img.blobs.items():
                if digest != img.digest:
                    assert c.get(f"/v2/hub/library/multi/blobs/{digest}").content == blob
        assert site.forwarder.count() == before


def test_blobs_redirected_to_another_origin_are_fetched_without_the_credentials(site: Site) -> None:
    bad = site.bad
    layer_digest = sha256(bad.layer)
    with site.client() as c:
        r = c.get("/v2/badauth/x/cdn/manifests/v1", headers=ACCEPT)
        assert r.status_code == 200 and r.content == bad.manifest
        r = c.get(f"/v2/badauth/x/cdn/blobs/{layer_digest}")
        assert r.status_code == 200 and r.content == bad.layer
    sent = dict(bad.authorization)
    assert sent["/v2/x/cdn/manifests/v1"] and sent["/v2/x/cdn/manifests/v1"].startswith("Basic ")
    assert sent[f"/v2/x/cdn/blobs/{layer_digest}"] is not None
    cdn = [auth for path, auth in bad.authorization if path.startswith("/cdn/")]
    assert cdn and all(auth is None for auth in cdn), cdn


def test_a_blob_that_redirects_forever_is_refused(site: Site) -> None:
    with site.client() as c:
        r = c.get(f"/v2/bad/x/loop/blobs/{sha256(site.bad.layer)}")
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
    assert "too many redirects" in r.json()["errors"][0]["message"]


def test_a_client_that_leaves_mid_blob_leaves_nothing_half_stored(site: Site) -> None:
    big = os.urandom(40 << 20)  # more than the proxy reads ahead of its client
    push_upstream(site.upstream_host, "library/big", "v1", {"big": big})
    digest = sha256(tar_layer({"big": big}))
    uploads = site.hallmark.data_dir / "blobs" / "uploads"
    with site.client() as c:
        with c.stream("GET", f"/v2/fresh/library/big/blobs/{digest}") as r:
            assert r.status_code == 200
            next(r.iter_raw(1 << 16))  # the first bytes, then the client is gone
        deadline = time.monotonic() + 60  # the proxy notices at its next send and drops its upload
        while any(p.name.startswith("proxy-") for p in uploads.iterdir()):
            assert time.monotonic() < deadline, list(uploads.iterdir())
            time.sleep(0.1)
        r = c.get(f"/v2/fresh/library/big/blobs/{digest}")  # fetched again, whole and right
        assert r.status_code == 200 and sha256(r.content) == digest


# Last: it stops the upstream.
def test_a_stopped_upstream_serves_the_cache_with_a_warning(site: Site) -> None:
    digest = push_upstream(site.upstream_host, "library/keep", "v1", {"k": b"keep"})
    with site.client() as c:
        assert c.get("/v2/fresh/library/keep/manifests/v1", headers=ACCEPT).status_code == 200
        assert wait_for(c, "fresh/library/keep", digest, timeout=120)["status"] == "done"
        site.registry.terminate()
        site.registry.wait(10)
        r = c.get("/v2/fresh/library/keep/manifests/v1", headers=ACCEPT)
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
        assert r.headers["Warning"].startswith("299 - ") and "cached copy" in r.headers["Warning"], r.headers
        r = c.get("/v2/fresh/library/never/manifests/v1", headers=ACCEPT)
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
