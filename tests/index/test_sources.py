"""Image sources: OCI layout (tags, platform indexes), docker-archive tarballs, a registry with token auth."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hallmark.index import index_source
from hallmark.oci import OciError, open_source
from hallmark.oci.registry import Reference
from hallmark.oci.source import split_layout_ref
from tests.index.imagebuilder import Image, Layer, build_image, write_docker_archive, write_layout


def small_image(arch: str = "amd64", pkg: str = "six") -> Image:
    layer = Layer().file(f"usr/lib/python3/dist-packages/{pkg}-1.0.dist-info/METADATA", f"Name: {pkg}\nVersion: 1.0\n")
    return build_image([(layer.tar_bytes(), "gzip")], arch=arch)


def test_layout_tag_selection(tmp_path: Path, debian_image: Image) -> None:
    write_layout(str(tmp_path), {"12": debian_image, "other": small_image()})
    src = open_source(f"oci:{tmp_path}:12")
    r = index_source(src)
    assert r.status == "done" and r.image_digest == debian_image.digest
    assert "libc6" in {p.name for p in r.packages}
    with pytest.raises(OciError, match="pick one with :TAG"):
        open_source(f"oci:{tmp_path}").get_manifest()
    with pytest.raises(OciError, match="no manifest tagged"):
        open_source(f"oci:{tmp_path}:nope").get_manifest()


def test_layout_platform_from_index(tmp_path: Path) -> None:
    amd, arm = small_image("amd64", "amdpkg"), small_image("arm64", "armpkg")
    write_layout(str(tmp_path), {"a": amd, "b": arm}, index_platforms={"a": "linux/amd64", "b": "linux/arm64"})
    r = index_source(open_source(f"oci:{tmp_path}:multi"))
    assert [p.name for p in r.packages] == ["amdpkg"] and r.platform == "linux/amd64"
    r = index_source(open_source(f"oci:{tmp_path}:multi", platform="linux/arm64"))
    assert [p.name for p in r.packages] == ["armpkg"] and r.platform == "linux/arm64"
    r = index_source(open_source(f"oci:{tmp_path}:multi", platform="linux/s390x"))
    assert r.status == "failed" and r.error is not None and "linux/amd64, linux/arm64" in r.error


def test_split_layout_ref(tmp_path: Path) -> None:
    assert split_layout_ref("/some/dir:tag") == ("/some/dir", "tag")
    assert split_layout_ref("/some/dir") == ("/some/dir", None)
    d = tmp_path / "with:colon"
    d.mkdir()
    assert split_layout_ref(str(d)) == (str(d), None)


def test_docker_archive(tmp_path: Path, debian_image: Image) -> None:
    from tests.index.conftest import layer0, layer1, layer2

    path = tmp_path / "image.tar"
    write_docker_archive(str(path), [layer0().tar_bytes(), layer1().tar_bytes(), layer2().tar_bytes()])
    r = index_source(open_source(f"docker-archive:{path}"))
    assert r.status == "done", r.error
    expected = index_source_names(debian_image)
    assert {(p.ecosystem, p.name, p.version) for p in r.packages} == expected
    assert r.distro is not None and r.distro.id == "debian"


def index_source_names(img: Image) -> set[tuple[str, str, str]]:
    from hallmark.index import index_image

    return {(p.ecosystem, p.name, p.version) for p in index_image(img.manifest, img.config, img.open_layer).packages}


def test_reference_parsing() -> None:
    r = Reference.parse("alpine")
    assert (r.host, r.repository, r.reference) == ("registry-1.docker.io", "library/alpine", "latest")
    r = Reference.parse("localhost:5000/team/app:1.2")
    assert (r.host, r.repository, r.tag) == ("localhost:5000", "team/app", "1.2")
    d = "sha256:" + "a" * 64
    r = Reference.parse(f"ghcr.io/o/r@{d}")
    assert (r.host, r.repository, r.reference) == ("ghcr.io", "o/r", d)
    with pytest.raises(OciError):
        Reference.parse("ghcr.io/UPPER/case:1")


class _Registry(BaseHTTPRequestHandler):
    """A tiny read-only registry that insists on an anonymous Bearer token, like Docker Hub."""

    blobs: dict[str, bytes] = {}
    tags: dict[str, str] = {}
    port = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/token"):
            assert "scope=repository%3Ateam%2Fapp%3Apull" in self.path
            return self._send(200, json.dumps({"token": "t0k"}).encode(), "application/json")
        if self.headers.get("Authorization") != "Bearer t0k":
            self.send_response(401)
            self.send_header(
                "WWW-Authenticate",
                f'Bearer realm="http://127.0.0.1:{self.port}/token",service="test",scope="repository:team/app:pull"',
            )
            self.end_headers()
            return None
        kind, _, ref = self.path.removeprefix("/v2/team/app/").partition("/")
        digest = self.tags.get(ref, ref)
        if digest not in self.blobs:
            return self._send(404, b"{}", "application/json")
        body = self.blobs[digest]
        mt = json.loads(body).get("mediaType", "") if kind == "manifests" else "application/octet-stream"
        return self._send(200, body, mt)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def registry(debian_image: Image) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    arm = small_image("arm64")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": arm.digest,
                    "size": len(arm.manifest),
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                },
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": debian_image.digest,
                    "size": len(debian_image.manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
            ],
        }
    ).encode()
    from tests.index.imagebuilder import sha256

    _Registry.blobs = {**debian_image.blobs, **arm.blobs, sha256(index): index}
    _Registry.tags = {"12": sha256(index)}
    _Registry.port = server.server_address[1]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield _Registry.port
    finally:
        server.shutdown()
        server.server_close()


def test_registry_with_token_flow_and_platform(registry: int, debian_image: Image) -> None:
    src = open_source(f"127.0.0.1:{registry}/team/app:12", insecure=True)
    try:
        r = index_source(src)
    finally:
        src.close()
    assert r.status == "done", r.error
    assert r.image_digest == debian_image.digest
    assert {(p.ecosystem, p.name, p.version) for p in r.packages} == index_source_names(debian_image)

    src = open_source(f"127.0.0.1:{registry}/team/app:12", insecure=True, platform="linux/arm64")
    try:
        r = index_source(src)
    finally:
        src.close()
    assert [p.name for p in r.packages] == ["six"]


def test_registry_unknown_tag(registry: int) -> None:
    src = open_source(f"127.0.0.1:{registry}/team/app:missing", insecure=True)
    r = index_source(src)
    src.close()
    assert r.status == "failed" and r.error is not None and "404" in r.error


def test_docker_archive_in_oci_form(tmp_path: Path, debian_image: Image) -> None:
    """``docker save`` since Docker 25 writes an OCI layout inside the tarball."""
    import tarfile

    layout = tmp_path / "layout"
    write_layout(str(layout), {"docker.io/library/debian:12": debian_image})
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(layout.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(layout)))
        manifest_json = json.dumps([{"Config": "x", "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest_json)
        import io

        tar.addfile(info, io.BytesIO(manifest_json))
    r = index_source(open_source(f"docker-archive:{archive}"))
    assert r.status == "done", r.error
    assert r.image_digest == debian_image.digest
    assert {(p.ecosystem, p.name, p.version) for p in r.packages} == index_source_names(debian_image)
