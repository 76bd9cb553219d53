"""``RegistryStore`` against a registry without the referrers API (tag-schema fallback, token auth with
push scope), and cosign discovery on the real containers/image vectors through ``hallmark verify``."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from hallmark.cli import app as cli_app
from hallmark.signing.artifact import sign_artifact, verify_artifact
from hallmark.signing.certs import TrustStore
from hallmark.signing.cosign import load_containers_image_signature
from hallmark.signing.keys import generate_test_ca_and_leaf, write_certificates
from hallmark.signing.manifest import SIGNATURE_ARTIFACT_TYPE
from hallmark.signing.policy import load_policy
from hallmark.signing.registry import RegistryArtifactError, RegistryStore
from tests.ocihelp import OCI_INDEX, OCI_MANIFEST, image, tar_layer
from tests.signing.conftest import COSIGN

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
PREFIX = "/v2/team/app/"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _OldRegistry(BaseHTTPRequestHandler):
    """A distribution-spec registry without ``/referrers``: Bearer tokens, pull vs push scope."""

    blobs: dict[str, bytes] = {}
    manifests: dict[str, tuple[str, bytes]] = {}
    tags: dict[str, str] = {}
    uploads: set[str] = set()
    token_scopes: list[str] = []
    port = 0

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self, write: bool) -> bool:
        want = "Bearer push-token" if write else ""
        got = self.headers.get("Authorization", "")
        if got in ("Bearer push-token", "Bearer pull-token") and (not write or got == want):
            return True
        action = "pull,push" if write else "pull"
        challenge = (
            f'Bearer realm="http://127.0.0.1:{self.port}/token",service="t",scope="repository:team/app:{action}"'
        )
        self._send(401, b"{}", {"WWW-Authenticate": challenge})
        return False

    def _token(self) -> None:
        scope = parse_qs(urlsplit(self.path).query)["scope"][0]
        self.token_scopes.append(scope)
        if scope.endswith(":pull,push"):
            expected = "Basic " + base64.b64encode(b"ci:s3cret").decode()
            if self.headers.get("Authorization") != expected:
                return self._send(401, b"{}")
            return self._send(200, json.dumps({"token": "push-token"}).encode())
        return self._send(200, json.dumps({"token": "pull-token"}).encode())

    def do_GET(self) -> None:
        if self.path.startswith("/token"):
            return self._token()
        if not self._authorized(False):
            return None
        path = urlsplit(self.path).path.removeprefix(PREFIX)
        kind, _, ref = path.partition("/")
        if kind == "referrers":
            return self._send(404, b'{"errors":[{"code":"UNSUPPORTED"}]}')
        if kind == "manifests":
            digest = self.tags.get(ref, ref)
            if digest not in self.manifests:
                return self._send(404, b"{}")
            media_type, body = self.manifests[digest]
            return self._send(200, body, {"Content-Type": media_type, "Docker-Content-Digest": digest})
        if kind == "blobs" and ref in self.blobs:
            return self._send(200, self.blobs[ref], {"Content-Type": "application/octet-stream"})
        return self._send(404, b"{}")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._authorized(True):
            return None
        assert urlsplit(self.path).path == PREFIX + "blobs/uploads/"
        upload = uuid.uuid4().hex
        self.uploads.add(upload)
        self._send(202, b"", {"Location": f"{PREFIX}blobs/uploads/{upload}"})

    def do_PUT(self) -> None:
        if not self._authorized(True):
            return None
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        rest = url.path.removeprefix(PREFIX)
        if rest.startswith("blobs/uploads/"):
            digest = parse_qs(url.query)["digest"][0]
            if rest.split("/")[-1] not in self.uploads or _sha(body) != digest:
                return self._send(400, b"{}")
            self.blobs[digest] = body
            return self._send(201, b"", {"Location": f"{PREFIX}blobs/{digest}"})
        ref = rest.removeprefix("manifests/")
        digest = _sha(body)
        self.manifests[digest] = (self.headers["Content-Type"], body)
        if not ref.startswith("sha256:"):
            self.tags[ref] = digest
        return self._send(201, b"", {"Docker-Content-Digest": digest})  # no OCI-Subject: client keeps the tag index


@pytest.fixture
def old_registry() -> Iterator[tuple[int, str]]:
    _OldRegistry.blobs, _OldRegistry.manifests, _OldRegistry.tags = {}, {}, {}
    _OldRegistry.uploads, _OldRegistry.token_scopes = set(), []
    _config, manifest = image([tar_layer({"a.txt": b"a"})])
    _OldRegistry.manifests[_sha(manifest)] = (OCI_MANIFEST, manifest)
    _OldRegistry.tags["v1"] = _sha(manifest)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldRegistry)
    _OldRegistry.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield _OldRegistry.port, _sha(manifest)
    finally:
        server.shutdown()
        server.server_close()


def _policy() -> bytes:
    return json.dumps(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "p",
                    "registryScopes": ["*"],
                    "signatureVerification": {"level": "strict"},
                    "trustStores": ["ca:t"],
                    "trustedIdentities": ["*"],
                }
            ],
        }
    ).encode()


def test_sign_and_verify_through_the_referrers_tag_schema(old_registry: tuple[int, str], tmp_path: Path) -> None:
    port, digest = old_registry
    pki = generate_test_ca_and_leaf("ec", curve="p256", now=NOW)
    (tmp_path / "x509" / "ca" / "t").mkdir(parents=True)
    write_certificates(tmp_path / "x509" / "ca" / "t" / "ca.crt", [pki.ca_cert])
    with RegistryStore(f"127.0.0.1:{port}", "team/app", insecure=True) as ro:
        with (  # a push token needs credentials
            pytest.raises(RegistryArtifactError, match="401"),
            RegistryStore(f"127.0.0.1:{port}", "team/app", insecure=True, push=True) as anonymous,
        ):
            anonymous.push_blob(b"x", "text/plain")
        with RegistryStore(
            f"127.0.0.1:{port}", "team/app", insecure=True, push=True, credentials=("ci", "s3cret")
        ) as rw:
            sig = sign_artifact(rw, "v1", pki.signer(), "cose", now=NOW)
            second = sign_artifact(rw, f"{digest}", pki.signer(), "jws", now=NOW)
        assert "repository:team/app:pull,push" in _OldRegistry.token_scopes
        # The client kept the fallback index under sha256-<hex>, listing both signatures.
        index = json.loads(_OldRegistry.manifests[_OldRegistry.tags[digest.replace(":", "-")]][1])
        assert index["mediaType"] == OCI_INDEX
        assert sorted(m["digest"] for m in index["manifests"]) == sorted(
            [sig.descriptor.digest, second.descriptor.digest]
        )
        subject = ro.resolve("v1")
        assert subject.digest == digest
        refs = ro.list_referrers(subject, SIGNATURE_ARTIFACT_TYPE)
        assert {r.digest for r in refs} == {sig.descriptor.digest, second.descriptor.digest}
        res = verify_artifact(ro, "v1", load_policy(_policy()), TrustStore(tmp_path), repository="x/team/app", now=NOW)
        assert res.passed, res.error
        # Content the registry serves is checked against its digest.
        some_blob = next(iter(sig.blobs))
        _OldRegistry.blobs[some_blob] = b"swapped content"
        with pytest.raises(RegistryArtifactError, match="does not match its digest"):
            ro.fetch_blob(some_blob)


def _cosign_layout(root: Path, manifest: bytes, signatures: list[Path]) -> Path:
    """An OCI layout with the vector manifest tagged v1 and a cosign ``.sig`` manifest from the vector files."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
        return _sha(data)

    layers = []
    for path in signatures:
        sig = load_containers_image_signature(path.read_bytes())
        layers.append(
            {
                "mediaType": sig.media_type,
                "digest": put(sig.payload),
                "size": len(sig.payload),
                "annotations": {"dev.cosignproject.cosign/signature": sig.signature_b64},
            }
        )
    config = b"{}"
    sig_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": 2},
            "layers": layers,
        }
    ).encode()
    image_digest = put(manifest)
    put(sig_manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entries = [
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": image_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": _sha(sig_manifest),
            "size": len(sig_manifest),
            "annotations": {"org.opencontainers.image.ref.name": image_digest.replace(":", "-") + ".sig"},
        },
    ]
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return root


@pytest.mark.parametrize(
    ("manifest_dir", "signatures", "key", "code", "expect"),
    [
        ("dir-img-cosign-valid", ["signature-1", "signature-2"], "cosign.pub", 0, "verified cosign signature"),
        (
            "dir-img-cosign-valid",
            ["../unknown-cosign-key.signature", "signature-1"],
            "cosign.pub",
            0,
            "does not verify",
        ),
        ("dir-img-cosign-valid", ["../unknown-cosign-key.signature"], "cosign.pub", 1, "does not verify"),
        ("dir-img-cosign-modified-manifest", ["../dir-img-cosign-valid/signature-1"], "cosign.pub", 1, "signed digest"),
        ("dir-img-cosign-key-rekor-valid", ["signature-1"], "cosign2.pub", 0, "verified cosign signature"),
        ("dir-img-cosign-key-rekor-valid", ["signature-1"], "cosign.pub", 1, "does not verify"),
    ],
)
def test_cosign_vectors_through_hallmark_verify(
    vectors: Path, tmp_path: Path, manifest_dir: str, signatures: list[str], key: str, code: int, expect: str
) -> None:
    folder = COSIGN / manifest_dir
    layout = _cosign_layout(
        tmp_path / "layout", (folder / "manifest.json").read_bytes(), [folder / s for s in signatures]
    )
    r = CliRunner().invoke(cli_app, ["verify", f"oci:{layout}:v1", "--cosign-key", str(COSIGN / key)])
    assert r.exit_code == code, r.output
    assert expect in r.output
