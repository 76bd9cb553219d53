"""The source registry of the mirror tests: Debian's ``docker-registry`` (the CNCF registry) with htpasswd
basic auth, started by the tests, and images pushed into it with skopeo."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.conftest import free_port
from tests.index.imagebuilder import Image, Layer, build_image, sha256, write_layout

USER, PASSWORD = "mirror-user", "Src-Pass-31337"
SBOM_TYPE = "application/spdx+json"
SECRET_ENV = "DATABASE_URL=postgres://appuser:Zx9vQ2mR7pLk4sT8@db.internal:5432/app\n"
TERMINAL = ("succeeded", "partial", "failed", "retrying")


@dataclass
class Source:
    host: str
    root: Path
    proc: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://{self.host}", auth=(USER, PASSWORD), timeout=30)

    def push(self, repo: str, images: dict[str, Image], work: Path, index: dict[str, str] | None = None) -> None:
        """skopeo copy of an OCI layout (one image per tag, or one index tagged ``multi``)."""
        layout = work / f"layout-{repo.replace('/', '-')}-{time.monotonic_ns()}"
        write_layout(str(layout), images, index)
        for tag in ["multi"] if index else list(images):
            r = subprocess.run(
                [
                    "skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false",
                    f"--dest-creds={USER}:{PASSWORD}", f"oci:{layout}:{tag}", f"docker://{self.host}/{repo}:{tag}",
                ],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr

    def blob_file(self, digest: str) -> Path:
        hexpart = digest.split(":", 1)[1]
        return self.root / "store" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"


def start_source(root: Path, delete: bool = True) -> Source:
    """The registry; ``delete=False`` leaves out ``REGISTRY_STORAGE_DELETE_ENABLED`` (DELETE answers 405)."""
    port = free_port()
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'store'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: mirror-test}}\n"
        f"auth: {{htpasswd: {{realm: source, path: {htpasswd}}}}}\n"
    )
    log = open(root / "registry.log", "wb")
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY_STORAGE_DELETE_ENABLED"}
    if delete:
        env["REGISTRY_STORAGE_DELETE_ENABLED"] = "true"
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 401:
                return Source(f"127.0.0.1:{port}", root, proc)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError((root / "registry.log").read_text())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    src = start_source(tmp_path_factory.mktemp("source"))
    try:
        yield src
    finally:
        src.proc.terminate()
        src.proc.wait(10)


def image(files: dict[str, bytes | str], arch: str = "amd64") -> Image:
    layer = Layer()
    for path, data in files.items():
        layer.file(path, data)
    return build_image([(layer.tar_bytes(), "gzip")], arch=arch)


def push_sbom_referrer(src: Source, repo: str, subject: str) -> str:
    """An SPDX artifact whose ``subject`` is ``subject``, plus the ``sha256-<hex>`` index a client
    writes for a registry without the referrers API (the CNCF registry 2.8)."""
    body = b'{"spdxVersion": "SPDX-2.3", "name": "mirrored"}'
    empty = b"{}"
    with src.client() as c:
        for blob in (body, empty):
            r = c.post(f"/v2/{repo}/blobs/uploads/")
            assert r.status_code == 202, r.text
            r = c.put(httpx.URL(r.headers["Location"]).copy_merge_params({"digest": sha256(blob)}), content=blob)
            assert r.status_code == 201, r.text
        subject_raw = c.get(
            f"/v2/{repo}/manifests/{subject}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        ).content
        artifact = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": SBOM_TYPE,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
                "layers": [{"mediaType": SBOM_TYPE, "digest": sha256(body), "size": len(body)}],
                "subject": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": subject,
                    "size": len(subject_raw),
                },
            }
        ).encode()
        ctype = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        r = c.put(f"/v2/{repo}/manifests/{sha256(artifact)}", content=artifact, headers=ctype)
        assert r.status_code == 201, r.text
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": sha256(artifact),
                        "size": len(artifact),
                        "artifactType": SBOM_TYPE,
                    }
                ],
            }
        ).encode()
        r = c.put(
            f"/v2/{repo}/manifests/{subject.replace(':', '-')}",
            content=index,
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        )
        assert r.status_code == 201, r.text
    return sha256(artifact)
