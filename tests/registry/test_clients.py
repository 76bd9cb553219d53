"""Real clients (skopeo, oras) against a real ``hallmark serve``."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.ocihelp import sha256, tar_layer, write_oci_layout

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (make test installs it)")


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, check=check, timeout=120
    )


def test_skopeo_round_trip(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    layers = [tar_layer({"etc/hello": b"hello world\n"}), tar_layer({"usr/bin/tool": b"\x7fELF fake" * 1000})]
    digest = write_oci_layout(src, "v1", layers, {"config": {"Env": ["A=1"]}})
    dest = f"docker://{server.host}/skopeo/app:v1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{src}:v1", dest)

    raw = skopeo("inspect", "--tls-verify=false", "--raw", dest).stdout.encode()
    assert sha256(raw) == digest
    info = json.loads(skopeo("inspect", "--tls-verify=false", dest).stdout)
    assert info["Digest"] == digest
    assert info["Layers"] == [sha256(layer) for layer in layers]
    assert info["Env"] == ["A=1"]

    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{server.host}/skopeo/app").stdout)
    assert tags["Tags"] == ["v1"]

    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", dest, f"oci:{out}:v1")
    for layer in layers:
        assert (out / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()).read_bytes() == layer

    # Copy between repositories: skopeo mounts the blobs.
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", dest, f"docker://{server.host}/skopeo/copy:v1")
    assert (
        json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{server.host}/skopeo/copy:v1").stdout)["Digest"]
        == digest
    )

    skopeo("delete", "--tls-verify=false", dest)
    gone = skopeo("inspect", "--tls-verify=false", dest, check=False)
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr.lower()


def test_oras_artifact_with_subject_and_referrers(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oras_client = pytest.importorskip("oras.client")
    import oras.oci

    monkeypatch.chdir(tmp_path)
    Path("sbom.json").write_text('{"bomFormat": "CycloneDX"}')
    Path("notes.txt").write_text("release notes")
    client = oras_client.OrasClient(hostname=server.host, insecure=True)
    client.push(target=f"{server.host}/oras/app:v1", files=["notes.txt"])
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/v2/oras/app/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        subject = oras.oci.Subject(
            mediaType=r.headers["Content-Type"], digest=r.headers["Docker-Content-Digest"], size=len(r.content)
        )
    client.push(
        target=f"{server.host}/oras/app:sbom",
        files=["sbom.json:application/vnd.cyclonedx+json"],
        subject=subject,
        manifest_config="/dev/null:application/vnd.example.sbom",
    )
    with httpx.Client(base_url=server.url) as c:
        refs = c.get(f"/v2/oras/app/referrers/{subject.digest}").json()["manifests"]
        assert len(refs) == 1
        assert refs[0]["artifactType"] == "application/vnd.example.sbom"
        sbom_digest = refs[0]["digest"]
        man = c.get(f"/v2/oras/app/manifests/{sbom_digest}").json()
        assert man["subject"]["digest"] == subject.digest
    out = tmp_path / "pulled"
    files = client.pull(target=f"{server.host}/oras/app:sbom", outdir=str(out))
    assert Path(files[0]).read_text() == '{"bomFormat": "CycloneDX"}'


def test_concurrent_pushes_of_one_blob(server: Server) -> None:
    data = bytes(range(256)) * 40_000  # ~10 MB
    digest = sha256(data)
    errors: list[BaseException] = []

    def push(i: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                loc = c.post(f"/v2/concurrent/r{i % 2}/blobs/uploads/").headers["Location"]
                for off in range(0, len(data), 1 << 20):
                    chunk = data[off : off + (1 << 20)]
                    r = c.patch(loc, content=chunk, headers={"Content-Range": f"{off}-{off + len(chunk) - 1}"})
                    assert r.status_code == 202, r.text
                    loc = r.headers["Location"]
                assert c.put(loc, params={"digest": digest}).status_code == 201
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    store = server.blob_store()
    assert digest in set(store.iterate())  # once, under its digest
    with store.open(digest) as f:
        assert f.read() == data
    with httpx.Client(base_url=server.url) as c:
        for i in range(2):
            assert c.get(f"/v2/concurrent/r{i}/blobs/{digest}").content == data


def _raw_request(server: Server, head: bytes, body: bytes) -> None:
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(head + body)
    s.close()  # vanish mid-body


def test_client_disconnect_mid_upload(server: Server) -> None:
    data = b"x" * 1_000_000
    digest = sha256(data)
    head = (
        f"POST /v2/disconnect/me/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {server.host}\r\n"
        f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    _raw_request(server, head, data[:300_000])
    with httpx.Client(base_url=server.url) as c:
        # Chunked session interrupted the same way.
        loc = c.post("/v2/disconnect/me/blobs/uploads/").headers["Location"]
        head = (
            f"PATCH {loc} HTTP/1.1\r\nHost: {server.host}\r\nContent-Length: {len(data)}\r\n"
            f"Content-Range: 0-{len(data) - 1}\r\n\r\n"
        ).encode()
        _raw_request(server, head, data[:200_000])
        import time

        time.sleep(0.5)
        assert c.head(f"/v2/disconnect/me/blobs/{digest}").status_code == 404
        assert not list((server.data_dir / "blobs" / "blobs").glob(f"sha256/*/{digest.split(':')[1]}"))
        # The session is still usable: the client can query it and finish properly.
        status = c.get(loc)
        assert status.status_code == 204
        offset = int(status.headers["Range"].split("-")[1]) + 1 if status.headers["Range"] != "0-0" else 0
        r = c.put(
            loc,
            params={"digest": digest},
            content=data[offset:],
            headers={"Content-Range": f"{offset}-{len(data) - 1}"},
        )
        if r.status_code == 400:
            # The interrupted chunk left a prefix; a client restarts the upload.
            assert r.json()["errors"][0]["code"] in {"DIGEST_INVALID", "SIZE_INVALID"}
        else:
            assert r.status_code == 201
            assert c.get(f"/v2/disconnect/me/blobs/{digest}").content == data
