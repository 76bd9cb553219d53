"""The OCI distribution API over HTTP against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets

import httpx
import pytest

from tests.conftest import Server
from tests.ocihelp import (
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    image,
    push_blob,
    push_image,
    push_manifest,
    sha256,
    tar_layer,
)


def blob_files(server: Server) -> set[str]:
    root = server.data_dir / "blobs" / "blobs"
    return {f"{p.parent.parent.name}:{p.name}" for p in root.glob("*/*/*")} if root.exists() else set()


def test_base_endpoint(client: httpx.Client) -> None:
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_push_and_pull_with_range(client: httpx.Client) -> None:
    data = secrets.token_bytes(100_000)
    digest = push_blob(client, "mono/blob", data)
    r = client.get(f"/v2/mono/blob/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
    h = client.head(f"/v2/mono/blob/blobs/{digest}")
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(data) and h.content == b""
    r = client.get(f"/v2/mono/blob/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    # Not linked in another repository.
    r = client.get(f"/v2/other/repo/blobs/{digest}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_chunked_upload_with_ordering_checks(client: httpx.Client, server: Server) -> None:
    data = secrets.token_bytes(300_000)
    digest = sha256(data)
    r = client.post("/v2/chunked/repo/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    assert r.headers["Docker-Upload-UUID"] in loc
    r = client.patch(
        loc, content=data[:100_000], headers={"Content-Range": "0-99999", "Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 202 and r.headers["Range"] == "0-99999"
    loc = r.headers["Location"]
    # Out of order: skips ahead.
    r = client.patch(loc, content=data[200_000:], headers={"Content-Range": "200000-299999"})
    assert r.status_code == 416
    assert r.headers["Range"] == "0-99999"
    assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    # Status survives the bad chunk.
    r = client.get(loc)
    assert r.status_code == 204 and r.headers["Range"] == "0-99999"
    r = client.patch(loc, content=data[100_000:200_000], headers={"Content-Range": "100000-199999"})
    assert r.status_code == 202
    # Final chunk with the PUT.
    r = client.put(
        loc,
        params={"digest": digest},
        content=data[200_000:],
        headers={"Content-Range": "200000-299999", "Content-Length": "100000"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/chunked/repo/blobs/{digest}").content == data
    # The session is gone once closed.
    assert client.get(loc).status_code == 404


def test_streamed_patch_without_range(client: httpx.Client) -> None:
    data = b"streamed" * 1000
    loc = client.post("/v2/streamed/blobs/uploads/").headers["Location"]

    def gen():
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = client.patch(loc, content=gen())
    assert r.status_code == 202
    r = client.put(r.headers["Location"], params={"digest": sha256(data)})
    assert r.status_code == 201


def test_wrong_digest_stores_nothing(client: httpx.Client, server: Server) -> None:
    before = blob_files(server)
    data = secrets.token_bytes(5000)
    wrong = sha256(b"something else")
    r = client.post("/v2/bad/digest/blobs/uploads/", params={"digest": wrong}, content=data)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    loc = client.post("/v2/bad/digest/blobs/uploads/").headers["Location"]
    client.patch(loc, content=data)
    r = client.put(loc, params={"digest": wrong})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert client.head(f"/v2/bad/digest/blobs/{sha256(data)}").status_code == 404
    assert client.head(f"/v2/bad/digest/blobs/{wrong}").status_code == 404
    assert blob_files(server) == before
    r = client.post("/v2/bad/digest/blobs/uploads/", params={"digest": "sha256:nothex"}, content=data)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    loc = client.post("/v2/bad/digest/blobs/uploads/").headers["Location"]
    r = client.put(loc)  # no digest parameter
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_sha512_digest(client: httpx.Client) -> None:
    data = b"sha512 content"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    r = client.post("/v2/sha512/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/sha512/blobs/{digest}").content == data


def test_upload_cancel_and_unknown_ids(client: httpx.Client) -> None:
    loc = client.post("/v2/cancel/me/blobs/uploads/").headers["Location"]
    client.patch(loc, content=b"abc")
    assert client.delete(loc).status_code == 204
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        r = client.request(method, loc, params={"digest": sha256(b"abc")} if method == "PUT" else None)
        assert r.status_code == 404, method
        assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    r = client.get("/v2/cancel/me/blobs/uploads/../../etc")
    assert r.status_code in (400, 404)
    r = client.patch("/v2/cancel/me/blobs/uploads/not-a-real-upload-id", content=b"x")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    # An upload id belongs to its repository.
    loc = client.post("/v2/cancel/me/blobs/uploads/").headers["Location"]
    other = loc.replace("/cancel/me/", "/cancel/other/")
    assert client.get(other).status_code == 404


def test_cross_repository_mount(client: httpx.Client) -> None:
    data = secrets.token_bytes(2000)
    digest = push_blob(client, "mount/source", data)
    r = client.post("/v2/mount/target/blobs/uploads/", params={"mount": digest, "from": "mount/source"})
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/mount/target/blobs/{digest}"
    assert client.get(f"/v2/mount/target/blobs/{digest}").content == data
    # Not mountable (unknown source): falls back to an upload session.
    r = client.post("/v2/mount/target2/blobs/uploads/", params={"mount": digest, "from": "nowhere/repo"})
    assert r.status_code == 202 and "/blobs/uploads/" in r.headers["Location"]
    r = client.post("/v2/mount/target3/blobs/uploads/", params={"mount": sha256(b"nope"), "from": "mount/source"})
    assert r.status_code == 202


def test_manifest_push_pull_by_tag_and_digest(client: httpx.Client) -> None:
    digest = push_image(client, "img/app", "v1")
    r = client.get("/v2/img/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_MANIFEST
    assert r.headers["Docker-Content-Digest"] == digest
    assert sha256(r.content) == digest
    r2 = client.get(f"/v2/img/app/manifests/{digest}")
    assert r2.content == r.content
    h = client.head("/v2/img/app/manifests/v1")
    assert h.status_code == 200 and h.headers["Docker-Content-Digest"] == digest
    assert int(h.headers["Content-Length"]) == len(r.content)
    r = client.get("/v2/img/app/manifests/v2")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert client.head("/v2/img/app/manifests/v2").status_code == 404


def test_push_by_digest_must_match(client: httpx.Client) -> None:
    layer = tar_layer({"a": b"a"})
    config, manifest = image([layer])
    push_blob(client, "bydigest", layer)
    push_blob(client, "bydigest", config)
    r = push_manifest(client, "bydigest", sha256(manifest), manifest)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/bydigest/manifests/{sha256(manifest)}"
    r = push_manifest(client, "bydigest", sha256(b"other"), manifest)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_manifest_validation_errors(client: httpx.Client) -> None:
    layer = tar_layer({"x": b"1"})
    config, manifest = image([layer])
    push_blob(client, "val/repo", config)
    # Layer missing.
    r = push_manifest(client, "val/repo", "missing", manifest)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert client.get("/v2/val/repo/manifests/missing").status_code == 404
    # Malformed JSON and wrong shapes.
    for body in (
        b"{not json",
        b"[]",
        json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode(),
        json.dumps({"schemaVersion": 1, "config": {}, "layers": []}).encode(),
    ):
        r = push_manifest(client, "val/repo", "bad", body)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID", body
    # Declared mediaType disagrees with Content-Type.
    r = push_manifest(client, "val/repo", "bad", manifest, OCI_INDEX)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    # Huge manifest: 413 before reading it all.
    huge = b'{"schemaVersion":2,"x":"' + b"a" * (4 * 1024 * 1024 + 10) + b'"}'
    r = push_manifest(client, "val/repo", "huge", huge)
    assert r.status_code == 413
    # Index referencing an unknown manifest.
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, manifest)]}
    ).encode()
    r = push_manifest(client, "val/repo", "idx", index, OCI_INDEX)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    # Invalid tag.
    r = push_manifest(client, "val/repo", "-bad-tag", manifest)
    assert r.status_code == 400


def test_reference_that_is_not_a_tag_is_unknown(client: httpx.Client) -> None:
    """The conformance suite's three "nonexistent manifest should return 404" checks (1.1.1).

    It asks for ``.INVALID_MANIFEST_NAME`` with GET and HEAD in the pull suite and GET in
    the push suite; nothing can be stored under a name that is not a tag, so it is unknown.
    """
    digest = push_image(client, "conform/repo", "v1")
    for ref in (".INVALID_MANIFEST_NAME", "-lead", "a" * 129):
        r = client.get(f"/v2/conform/repo/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", (ref, r.text)
        h = client.head(f"/v2/conform/repo/manifests/{ref}")
        assert h.status_code == 404 and h.content == b""
        assert client.delete(f"/v2/conform/repo/manifests/{ref}").status_code == 404
    assert client.get("/v2/conform/never-pushed/manifests/.INVALID_MANIFEST_NAME").status_code == 404
    # Pushing to such a name stays an error, and stores nothing.
    manifest = client.get(f"/v2/conform/repo/manifests/{digest}").content
    r = push_manifest(client, "conform/repo", ".INVALID_MANIFEST_NAME", manifest)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    assert client.get("/v2/conform/repo/tags/list").json()["tags"] == ["v1"]


@pytest.mark.parametrize("name", ["UPPER/case", "a/../b", "a//b", "-lead", "trail-", "a" * 256])
def test_invalid_names(server: Server, name: str) -> None:
    # http.client sends the path as written (httpx would resolve the "..").
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for method, path in (
            ("POST", f"/v2/{name}/blobs/uploads/"),
            ("GET", f"/v2/{name}/tags/list"),
            ("GET", f"/v2/{name}/manifests/latest"),
        ):
            conn.request(method, path, body=b"" if method == "POST" else None)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 400, (method, path, resp.status)
            assert body["errors"][0]["code"] == "NAME_INVALID"
    finally:
        conn.close()


def test_index_and_content_negotiation(client: httpx.Client) -> None:
    d1 = push_image(client, "multi/arch", "amd64-only")
    m1 = client.get(f"/v2/multi/arch/manifests/{d1}").content
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, m1, platform={"os": "linux", "architecture": "amd64"})],
        }
    ).encode()
    r = push_manifest(client, "multi/arch", "latest", index, OCI_INDEX)
    assert r.status_code == 201, r.text
    r = client.get("/v2/multi/arch/manifests/latest", headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"})
    assert r.headers["Content-Type"] == OCI_INDEX
    # A client that only reads image manifests gets the linux/amd64 one.
    r = client.get("/v2/multi/arch/manifests/latest", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_MANIFEST
    assert r.headers["Docker-Content-Digest"] == d1


def test_tags_and_catalog_pagination(client: httpx.Client) -> None:
    for i in range(5):
        push_image(client, f"page/r{i}", "t")
    for tag in ["a", "b", "c", "d", "e"]:
        push_image(client, "page/tags", tag)
    r = client.get("/v2/page/tags/tags/list", params={"n": 2})
    assert r.json() == {"name": "page/tags", "tags": ["a", "b"]}
    link = r.headers["Link"]
    assert 'rel="next"' in link and "last=b" in link
    url = link.split(";")[0].strip("<>")
    r = client.get(url)
    assert r.json()["tags"] == ["c", "d"]
    r = client.get("/v2/page/tags/tags/list", params={"n": 2, "last": "d"})
    assert r.json()["tags"] == ["e"] and "Link" not in r.headers
    r = client.get("/v2/page/tags/tags/list", params={"n": 0})
    assert r.json()["tags"] == []
    r = client.get("/v2/nosuch/repo/tags/list")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    seen: list[str] = []
    url = "/v2/_catalog?n=2"
    while url:
        r = client.get(url)
        seen += r.json()["repositories"]
        url = r.headers["Link"].split(";")[0].strip("<>") if "Link" in r.headers else ""
    assert [n for n in seen if n.startswith("page/r")] == [f"page/r{i}" for i in range(5)]
    assert seen == sorted(seen)


def test_referrers_api(client: httpx.Client) -> None:
    subject = push_image(client, "refs/app", "v1")
    subject_size = len(client.get(f"/v2/refs/app/manifests/{subject}").content)
    empty = b"{}"
    push_blob(client, "refs/app", empty)
    made = {}
    for i, atype in enumerate(
        ["application/vnd.example.sbom", "application/vnd.example.sig", "application/vnd.example.sbom"]
    ):
        layer = f"artifact {i}".encode()
        push_blob(client, "refs/app", layer)
        man = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": atype,
                "config": descriptor(EMPTY_JSON, empty),
                "layers": [descriptor("text/plain", layer)],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
                "annotations": {"n": str(i)},
            }
        ).encode()
        r = push_manifest(client, "refs/app", sha256(man), man)
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject
        made[sha256(man)] = atype
    r = client.get(f"/v2/refs/app/referrers/{subject}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    doc = r.json()
    assert doc["mediaType"] == OCI_INDEX and doc["schemaVersion"] == 2
    assert {m["digest"]: m["artifactType"] for m in doc["manifests"]} == made
    assert all(m["annotations"]["n"] in "012" for m in doc["manifests"])
    assert "OCI-Filters-Applied" not in r.headers
    r = client.get(f"/v2/refs/app/referrers/{subject}", params={"artifactType": "application/vnd.example.sbom"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert len(r.json()["manifests"]) == 2
    # Unknown subject: an empty index, not an error.
    r = client.get(f"/v2/refs/app/referrers/{sha256(b'none')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = client.get("/v2/refs/app/referrers/sha256:bad")
    assert r.status_code == 400
    # Subject may be pushed after its referrers (OCI 1.1).
    late_subject = sha256(b"not yet pushed")
    man = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/x.late",
            "config": descriptor(EMPTY_JSON, empty),
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": late_subject, "size": 10},
        }
    ).encode()
    assert push_manifest(client, "refs/app", sha256(man), man).status_code == 201
    assert len(client.get(f"/v2/refs/app/referrers/{late_subject}").json()["manifests"]) == 1


def test_deletion(client: httpx.Client) -> None:
    digest = push_image(client, "del/repo", "v1", files={"f": b"delete me"})
    client.put(
        "/v2/del/repo/manifests/v2",
        content=client.get(f"/v2/del/repo/manifests/{digest}").content,
        headers={"Content-Type": OCI_MANIFEST},
    )
    # Delete a tag only.
    assert client.delete("/v2/del/repo/manifests/v2").status_code == 202
    assert client.get("/v2/del/repo/manifests/v2").status_code == 404
    assert client.get("/v2/del/repo/manifests/v1").status_code == 200
    # Delete the manifest by digest: its tags go too.
    assert client.delete(f"/v2/del/repo/manifests/{digest}").status_code == 202
    assert client.get(f"/v2/del/repo/manifests/{digest}").status_code == 404
    assert client.get("/v2/del/repo/manifests/v1").status_code == 404
    assert client.delete(f"/v2/del/repo/manifests/{digest}").status_code == 404
    layer = tar_layer({"f": b"delete me"})
    assert client.delete(f"/v2/del/repo/blobs/{sha256(layer)}").status_code == 202
    assert client.head(f"/v2/del/repo/blobs/{sha256(layer)}").status_code == 404
    assert client.delete(f"/v2/del/repo/blobs/{sha256(layer)}").status_code == 404


def test_tag_immutability(client: httpx.Client) -> None:
    d1 = push_image(client, "immut/repo", "v1", files={"a": b"1"})
    r = client.patch("/api/v1/repositories/immut/repo", json={"immutable_tags": True})
    assert r.status_code == 200, r.text
    assert r.json()["immutable_tags"] is True
    layer = tar_layer({"a": b"2"})
    config, manifest = image([layer])
    push_blob(client, "immut/repo", layer)
    push_blob(client, "immut/repo", config)
    r = push_manifest(client, "immut/repo", "v1", manifest)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    assert client.get("/v2/immut/repo/manifests/v1").headers["Docker-Content-Digest"] == d1
    # Re-pushing the same content, and new tags, are fine.
    assert push_manifest(client, "immut/repo", "v2", manifest).status_code == 201
    assert client.delete("/v2/immut/repo/manifests/v1").status_code == 403
    r = client.patch("/api/v1/repositories/immut/repo", json={"immutable_tags": "yes"})
    assert r.status_code == 400


def test_upload_session_survives_restart(server: Server) -> None:
    data = secrets.token_bytes(50_000)
    with httpx.Client(base_url=server.url) as c:
        loc = c.post("/v2/restart/me/blobs/uploads/").headers["Location"]
        assert c.patch(loc, content=data[:20_000], headers={"Content-Range": "0-19999"}).status_code == 202
    server.restart()
    with httpx.Client(base_url=server.url) as c:
        r = c.get(loc)
        assert r.status_code == 204 and r.headers["Range"] == "0-19999"
        assert c.patch(loc, content=data[20_000:], headers={"Content-Range": "20000-49999"}).status_code == 202
        r = c.put(loc, params={"digest": sha256(data)})
        assert r.status_code == 201
        assert c.get(f"/v2/restart/me/blobs/{sha256(data)}").content == data


def test_unknown_endpoint_and_method(client: httpx.Client) -> None:
    r = client.get("/v2/repo/unknown/thing")
    assert r.status_code == 404
    r = client.post("/v2/some/repo/manifests/v1")
    assert r.status_code == 405


def test_deletion_can_be_disabled(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data, env={"HALLMARK_REGISTRY__DELETE_ENABLED": "false"}).start()
    try:
        with httpx.Client(base_url=srv.url) as c:
            digest = push_image(c, "nodelete/repo", "v1")
            for path in (f"/v2/nodelete/repo/manifests/{digest}", "/v2/nodelete/repo/manifests/v1"):
                r = c.delete(path)
                assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
            assert c.get("/v2/nodelete/repo/manifests/v1").status_code == 200
    finally:
        srv.stop()


def test_invalid_configuration_fails_at_start(tmp_path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "hallmark", "serve", "--data-dir", str(tmp_path)],
        env={**__import__("os").environ, "HALLMARK_REGISTRY__MAX_MANIFEST_BYTES": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "registry.max_manifest_bytes" in r.stderr
