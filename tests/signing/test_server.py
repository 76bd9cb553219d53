"""Signing against a real ``hallmark serve``: signed reports, the verification and sign API, and
``hallmark sign``/``hallmark verify`` over the registry HTTP API (plain HTTP with ``--insecure``)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from hallmark.cli import app as cli_app
from hallmark.signing.keys import generate_test_ca_and_leaf, load_signer, write_certificates, write_test_pki
from hallmark.signing.layout import Descriptor
from hallmark.signing.manifest import SIGNATURE_ARTIFACT_TYPE, build_signature
from tests.conftest import Server
from tests.ocihelp import OCI_MANIFEST, push_blob, push_image, push_manifest, sha256
from tests.pipeline.test_pipeline import wait_for

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


@dataclass
class Site:
    server: Server
    keys: dict[str, Path]
    policy: Path
    good_store: Path
    wrong_store: Path
    api_store: Path  # the trust store the server is configured with (swapped by one test)


def _policy(path: Path) -> Path:
    path.write_text(
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
    return path


def _store(root: Path, ca_cert: object) -> Path:
    folder = root / "x509" / "ca" / "hallmark"
    folder.mkdir(parents=True)
    write_certificates(folder / "ca.crt", [ca_cert])  # type: ignore[list-item]
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("signing-server")
    pki = generate_test_ca_and_leaf("ec", curve="p256", common_name="Hallmark Enterprise Signer")
    other = generate_test_ca_and_leaf("ec", curve="p256", common_name="Someone Else")
    keys = write_test_pki(root / "keys", pki)
    good = _store(root / "good-store", pki.ca_cert)
    wrong = _store(root / "wrong-store", other.ca_cert)
    api_store = _store(root / "api-store", pki.ca_cert)
    policy = _policy(root / "trustpolicy.json")
    data = root / "data"
    data.mkdir()
    env = {
        "HALLMARK_SIGNING__KEY": str(keys["key"]),
        "HALLMARK_SIGNING__CERT": str(keys["chain"]),
        "HALLMARK_SIGNING__TRUST_POLICY": str(policy),
        "HALLMARK_SIGNING__TRUST_STORE": str(api_store),
    }
    srv = Server(data, env=env).start()
    try:
        yield Site(srv, keys, policy, good, wrong, api_store)
    finally:
        srv.stop()


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli_app, list(args))
    return r.exit_code, r.output


def _verify_cli(site: Site, ref: str, store: Path | None = None) -> tuple[int, str]:
    return _cli(
        "verify", ref, "--insecure", "--policy", str(site.policy), "--trust-store", str(store or site.good_store)
    )


def test_reports_are_signed_and_the_verification_api(site: Site) -> None:
    repo = "signing/api"
    with httpx.Client(base_url=site.server.url, timeout=30) as c:
        digest = push_image(c, repo, "v1", files={"etc/os-release": b"ID=alpine\nVERSION_ID=3.19.0\n"})
        img = wait_for(c, repo, digest)
        assert img["status"] == "done", img
        assert img["verification"] is None  # never verified yet
        reports = img["reports"]
        assert {r["kind"] for r in reports} >= {"sbom-cyclonedx", "sbom-spdx", "vulnerabilities"}
        for rep in reports:
            # Each report artifact has exactly the Notary signature the pipeline attached as its referrer.
            assert rep["signature_digest"], rep
            refs = c.get(f"/v2/{repo}/referrers/{rep['artifact_digest']}").json()["manifests"]
            assert [(m["digest"], m["artifactType"]) for m in refs] == [
                (rep["signature_digest"], SIGNATURE_ARTIFACT_TYPE)
            ]
            sig = c.get(f"/v2/{repo}/manifests/{rep['signature_digest']}", headers={"Accept": OCI_MANIFEST}).json()
            assert sig["subject"]["digest"] == rep["artifact_digest"]
            assert sig["layers"][0]["mediaType"] == "application/jose+json"

        base = f"/api/v1/repositories/{repo}/images/{digest}"
        # The image itself is not signed yet; its reports are, by the configured key.
        v = c.get(base + "/verification", params={"reports": "1"}).json()
        assert "passed" in v, v
        assert v["passed"] is False and v["level"] == "strict"
        assert "no signature is associated" in v["error"]
        assert v["reports_passed"] is True and len(v["reports"]) == len(reports)
        for rep in v["reports"]:
            assert rep["passed"] is True, rep
            assert rep["signatures"][0]["signer"].startswith("CN=Hallmark Enterprise Signer")
        assert c.get(base).json()["verification"]["passed"] is False

        r = c.post(base + "/sign")
        assert r.status_code == 201, r.text
        signed = r.json()
        assert signed["verification"]["passed"] is True
        v = c.get(base + "/verification").json()
        assert v["passed"] is True and v["level"] == "strict" and v["policy"] == "enterprise"
        assert v["signatures"][0]["signature_manifest"] == signed["signature"]
        assert v["signatures"][0]["warnings"] == []
        assert [ch["check"] for ch in v["signatures"][0]["checks"]][:2] == ["integrity", "authenticity"]
        status = c.get(base).json()["verification"]
        assert status["passed"] is True and status["level"] == "strict" and status["signatures"] == 1

        # The trust store is read per request: with a foreign CA the same signature is not authentic.
        ca = site.api_store / "x509" / "ca" / "hallmark" / "ca.crt"
        saved = ca.read_bytes()
        shutil.copy(site.wrong_store / "x509" / "ca" / "hallmark" / "ca.crt", ca)
        try:
            v = c.get(base + "/verification").json()
        finally:
            ca.write_bytes(saved)
        assert v["passed"] is False
        assert "authenticity validation failed" in v["signatures"][0]["error"]
        assert c.get(base).json()["verification"]["passed"] is False

        missing = "sha256:" + "0" * 64
        assert c.get(f"/api/v1/repositories/{repo}/images/{missing}/verification").status_code == 404
        assert c.post(f"/api/v1/repositories/{repo}/images/{missing}/sign").status_code == 404


def test_cli_sign_and_verify_over_the_registry(site: Site) -> None:
    repo = "signing/cli"
    with httpx.Client(base_url=site.server.url, timeout=30) as c:
        digest = push_image(c, repo, "v1")
        push_image(c, repo, "unsigned", files={"other.txt": b"not signed"})
    ref = f"{site.server.host}/{repo}:v1"
    code, out = _verify_cli(site, ref)
    assert code == 1 and "no signature is associated" in out
    code, out = _cli("sign", ref, "--insecure", "--key", str(site.keys["key"]), "--cert", str(site.keys["chain"]))
    assert code == 0, out
    assert "BEGIN" not in out  # no key material in output
    code, out = _verify_cli(site, ref)
    assert code == 0, out
    assert f"verified {ref} ({digest}) at level strict" in out
    code, out = _verify_cli(site, f"{site.server.host}/{repo}@{digest}")
    assert code == 0, out
    code, out = _verify_cli(site, ref, site.wrong_store)
    assert code == 1 and "authenticity validation failed" in out
    code, out = _verify_cli(site, f"{site.server.host}/{repo}:unsigned")
    assert code == 1 and "no signature is associated" in out
    code, out = _verify_cli(site, f"{site.server.host}/{repo}:missing")
    assert code == 1 and "404" in out


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_tampered_envelope_fails_integrity(site: Site) -> None:
    repo = "signing/tampered"
    with httpx.Client(base_url=site.server.url, timeout=30) as c:
        digest = push_image(c, repo, "v1", files={"t.txt": b"tamper target"})
        manifest = c.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST}).content
        subject = Descriptor(OCI_MANIFEST, digest, len(manifest))
        sig = build_signature(subject, load_signer(site.keys["key"], site.keys["chain"]), "jws")
        envelope = json.loads(sig.envelope)
        payload = json.loads(base64.urlsafe_b64decode(envelope["payload"] + "=="))
        payload["targetArtifact"]["annotations"] = {"injected": "after signing"}
        envelope["payload"] = _b64url(json.dumps(payload).encode())
        tampered = json.dumps(envelope).encode()
        doc = json.loads(sig.manifest)
        doc["layers"][0].update({"digest": sha256(tampered), "size": len(tampered)})
        for data in (b"{}", tampered):
            push_blob(c, repo, data)
        body = json.dumps(doc).encode()
        assert push_manifest(c, repo, sha256(body), body).status_code == 201
        v = c.get(f"/api/v1/repositories/{repo}/images/{digest}/verification").json()
    assert v["passed"] is False
    assert len(v["signatures"]) == 1
    assert v["signatures"][0]["error"].startswith("integrity validation failed")
    code, out = _verify_cli(site, f"{site.server.host}/{repo}:v1")
    assert code == 1 and "integrity" in out


def test_cosign_signature_in_the_registry(site: Site, tmp_path: Path) -> None:
    """A ``sha256-<hex>.sig`` tag in cosign's simple-signing format, verified with ``--cosign-key``."""
    repo = "signing/cosign"
    key = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    other = tmp_path / "other.pub"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with httpx.Client(base_url=site.server.url, timeout=30) as c:
        digest = push_image(c, repo, "v1", files={"c.txt": b"cosign"})
        ref = f"{site.server.host}/{repo}:v1"
        code, out = _cli("verify", ref, "--insecure", "--cosign-key", str(pub))
        assert code == 1 and "no cosign signature" in out
        payload = json.dumps(
            {
                "critical": {
                    "identity": {"docker-reference": f"{site.server.host}/{repo}"},
                    "image": {"docker-manifest-digest": digest},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
        ).encode()
        signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
        config = b'{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}'
        push_blob(c, repo, payload)
        push_blob(c, repo, config)
        sig_manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": SIMPLE_SIGNING,
                        "digest": sha256(payload),
                        "size": len(payload),
                        "annotations": {"dev.cosignproject.cosign/signature": signature},
                    }
                ],
            }
        ).encode()
        tag = digest.replace(":", "-") + ".sig"
        assert push_manifest(c, repo, tag, sig_manifest).status_code == 201
    code, out = _cli("verify", ref, "--insecure", "--cosign-key", str(pub))
    assert code == 0, out
    assert "verified cosign signature" in out
    code, out = _cli("verify", ref, "--insecure", "--cosign-key", str(other))
    assert code == 1 and "does not verify with the given public key" in out


def test_sign_and_verify_with_access_control(site: Site, tmp_path: Path) -> None:
    """With access control on, the CLI gets push- and pull-scoped tokens with the user's credentials."""
    from hallmark.access.service import AccessService
    from hallmark.config import load_config
    from hallmark.metadata.db import make_engine, migrate

    data = tmp_path / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    access = AccessService(cfg, engine)
    password = "signer-Secret-246810"
    access.add_user("test", "signer", password)
    access.grant("test", "principal", "signer", "namespace", "sec", "write")
    access.audit.flush()
    engine.dispose()
    srv = Server(data, access=True).start()
    try:
        r = httpx.get(
            srv.url + "/auth/token",
            params={"service": "hallmark", "scope": "repository:sec/app:pull,push"},
            auth=("signer", password),
        )
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['token']}"}
        with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as c:
            push_image(c, "sec/app", "v1")
        ref = f"{srv.host}/sec/app:v1"
        key, chain = str(site.keys["key"]), str(site.keys["chain"])
        runner = CliRunner()
        anonymous = runner.invoke(cli_app, ["sign", ref, "--insecure", "--key", key, "--cert", chain])
        assert anonymous.exit_code == 1 and "401" in anonymous.output
        signed = runner.invoke(
            cli_app,
            ["sign", ref, "--insecure", "--key", key, "--cert", chain, "-u", "signer", "--password-stdin"],
            input=password + "\n",
        )
        assert signed.exit_code == 0, signed.output
        assert password not in signed.output
        args = ["verify", ref, "--insecure", "--policy", str(site.policy), "--trust-store", str(site.good_store)]
        ok = runner.invoke(cli_app, [*args, "-u", "signer", "--password-stdin"], input=password + "\n")
        assert ok.exit_code == 0, ok.output
        assert runner.invoke(cli_app, args).exit_code == 1  # anonymous pull is off by default
    finally:
        srv.stop()
