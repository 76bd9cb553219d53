"""Sign -> verify round trips for every algorithm and both envelopes, the CLI, and bad input."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from hallmark.signing import cose, jws
from hallmark.signing.artifact import LayoutStore, sign_artifact, verify_artifact
from hallmark.signing.certs import TrustStore
from hallmark.signing.envelope import SignRequest, build_payload
from hallmark.signing.errors import KeyLoadError
from hallmark.signing.keys import (
    LocalKeySigner,
    SigningPKI,
    generate_test_ca_and_leaf,
    load_signer,
    write_private_key,
    write_test_pki,
)
from hallmark.signing.layout import Descriptor
from hallmark.signing.manifest import build_signature
from hallmark.signing.policy import load_policy
from hallmark.signing.verify import verify_envelope

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
SUBJECT = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ab" * 32, 1234)
ALGS = [
    ("rsa", 2048, "p256", "PS256"),
    ("rsa", 3072, "p256", "PS384"),
    ("rsa", 4096, "p256", "PS512"),
    ("ec", 0, "p256", "ES256"),
    ("ec", 0, "p384", "ES384"),
    ("ec", 0, "p521", "ES512"),
]
_PKI_CACHE: dict[tuple[str, int, str], SigningPKI] = {}


def pki(kind: str = "ec", bits: int = 0, curve: str = "p256") -> SigningPKI:
    key = (kind, bits, curve)
    if key not in _PKI_CACHE:
        _PKI_CACHE[key] = generate_test_ca_and_leaf(kind, bits or 2048, curve, now=NOW)
    return _PKI_CACHE[key]


def statement(level: str = "strict", identity: str = "*"):
    doc = {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": "t",
                "registryScopes": ["*"],
                "signatureVerification": {"level": level},
                "trustStores": ["ca:test"],
                "trustedIdentities": [identity],
            }
        ],
    }
    return load_policy(json.dumps(doc)).statements[0]


def store_for(tmp_path: Path, p: SigningPKI) -> TrustStore:
    from hallmark.signing.keys import write_certificates

    folder = tmp_path / "x509" / "ca" / "test"
    folder.mkdir(parents=True, exist_ok=True)
    write_certificates(folder / "ca.crt", [p.ca_cert])
    return TrustStore(tmp_path)


@pytest.mark.parametrize("envelope", ["jws", "cose"])
@pytest.mark.parametrize(("kind", "bits", "curve", "alg"), ALGS)
def test_roundtrip(tmp_path, kind, bits, curve, alg, envelope):
    p = pki(kind, bits, curve)
    signer = p.signer()
    assert signer.algorithm.name == alg
    sig = build_signature(SUBJECT, signer, envelope, now=NOW, expiry=dt.timedelta(days=1))
    manifest = json.loads(sig.manifest)
    assert manifest["artifactType"] == "application/vnd.cncf.notary.signature"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert manifest["subject"]["digest"] == SUBJECT.digest
    assert len(manifest["layers"]) == 1 and manifest["layers"][0]["mediaType"] == sig.envelope_media_type
    assert len(json.loads(manifest["annotations"]["io.cncf.notary.x509chain.thumbprint#S256"])) == 2
    ident = "x509.subject:" + p.leaf_cert.subject.rfc4514_string()
    res = verify_envelope(
        sig.envelope,
        sig.envelope_media_type,
        SUBJECT,
        statement(identity=ident),
        store_for(tmp_path, p),
        NOW + dt.timedelta(hours=1),
    )
    assert res.passed, res.error
    assert [c.check for c in res.checks] == ["integrity", "authenticity", "authenticTimestamp", "expiry", "revocation"]
    later = verify_envelope(
        sig.envelope, sig.envelope_media_type, SUBJECT, statement(), store_for(tmp_path, p), NOW + dt.timedelta(days=2)
    )
    assert not later.passed and "expiry validation failed" in (later.error or "")


def test_jws_header_encoding_matches_conformance_shape():
    signer = pki().signer()
    env = json.loads(build_signature(SUBJECT, signer, "jws", now=NOW).envelope)
    protected = base64.urlsafe_b64decode(env["protected"] + "==").decode()
    assert protected == (
        '{"alg":"ES256","crit":["io.cncf.notary.signingScheme"],'
        '"cty":"application/vnd.cncf.notary.payload.v1+json",'
        '"io.cncf.notary.signingScheme":"notary.x509","io.cncf.notary.signingTime":"2030-01-01T00:00:00Z"}'
    )
    assert base64.urlsafe_b64decode(env["payload"] + "==") == build_payload(SUBJECT)
    assert not env["payload"].endswith("=") and not env["signature"].endswith("=")


def test_cose_header_encoding():
    signer = pki().signer()
    env = cbor2.loads(build_signature(SUBJECT, signer, "cose", now=NOW).envelope)
    assert env.tag == 18
    header = cbor2.loads(env.value[0])
    assert list(header)[:3] == [1, 2, 3] and header[1] == -7
    assert env.value[0].hex().count("c11a") == 1  # tag-1 epoch signing time


# --- layout sign/verify and the CLI -------------------------------------------------------------


def make_layout(root: Path) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    store = LayoutStore.__new__(LayoutStore)
    import hashlib

    config = b"{}"
    layer = b"hello"
    for blob in (config, layer):
        (root / "blobs/sha256" / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": 2,
            },
            "layers": [{"mediaType": "text/plain", "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": 5}],
        }
    ).encode()
    digest = hashlib.sha256(manifest).hexdigest()
    (root / "blobs/sha256" / digest).write_bytes(manifest)
    (root / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": "sha256:" + digest,
                        "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": "v1"},
                    }
                ],
            }
        )
    )
    del store
    return root


def test_sign_and_verify_layout(tmp_path):
    layout = make_layout(tmp_path / "layout")
    p = pki("rsa", 2048, "p256")
    sig = sign_artifact(LayoutStore(layout), "v1", p.signer(), "cose", now=NOW)
    index = json.loads((layout / "index.json").read_text())
    assert any(m["digest"] == sig.descriptor.digest for m in index["manifests"])
    doc = load_policy(
        json.dumps(
            {
                "version": "1.0",
                "trustPolicies": [
                    {
                        "name": "t",
                        "registryScopes": ["*"],
                        "signatureVerification": {"level": "strict"},
                        "trustStores": ["ca:test"],
                        "trustedIdentities": ["*"],
                    }
                ],
            }
        )
    )
    res = verify_artifact(LayoutStore(layout), "v1", doc, store_for(tmp_path / "ts", p), repository="x.io/a", now=NOW)
    assert res.passed, res.error


def test_cli_generate_sign_verify(tmp_path):
    from hallmark.cli import app

    runner = CliRunner()
    keys = tmp_path / "keys"
    r = runner.invoke(app, ["key", "generate", "--out", str(keys), "--type", "ec", "--curve", "p384"])
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(keys / "leaf.key").st_mode) == 0o600
    assert b"PRIVATE KEY" not in r.output.encode()
    layout = make_layout(tmp_path / "layout")
    r = runner.invoke(
        app,
        [
            "sign",
            f"oci:{layout}:v1",
            "--key",
            str(keys / "leaf.key"),
            "--cert",
            str(keys / "leaf.crt"),
            "--envelope",
            "jws",
        ],
    )
    assert r.exit_code == 0, r.output
    store = tmp_path / "store" / "x509" / "ca" / "test"
    store.mkdir(parents=True)
    (store / "ca.crt").write_bytes((keys / "ca.crt").read_bytes())
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "version": "1.0",
                "trustPolicies": [
                    {
                        "name": "t",
                        "registryScopes": ["*"],
                        "signatureVerification": {"level": "strict"},
                        "trustStores": ["ca:test"],
                        "trustedIdentities": ["*"],
                    }
                ],
            }
        )
    )
    ok = runner.invoke(
        app, ["verify", f"oci:{layout}:v1", "--policy", str(policy), "--trust-store", str(tmp_path / "store")]
    )
    assert ok.exit_code == 0, ok.output
    other = tmp_path / "other" / "x509" / "ca" / "test"
    other.mkdir(parents=True)
    from hallmark.signing.keys import write_certificates

    write_certificates(other / "ca.crt", [pki("ec", 0, "p521").ca_cert])
    bad = runner.invoke(
        app, ["verify", f"oci:{layout}:v1", "--policy", str(policy), "--trust-store", str(tmp_path / "other")]
    )
    assert bad.exit_code == 1
    assert "authenticity validation failed" in bad.output


# --- keys -------------------------------------------------------------------------------------


def test_key_files_and_pkcs12(tmp_path):
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    p = pki("rsa", 3072, "p256")
    paths = write_test_pki(tmp_path, p)
    assert stat.S_IMODE(os.stat(paths["key"]).st_mode) == 0o600
    signer = load_signer(paths["key"], paths["chain"])
    assert signer.algorithm.name == "PS384" and "PRIVATE" not in repr(signer)
    p12 = pkcs12.serialize_key_and_certificates(
        b"x", p.leaf_key, p.leaf_cert, [p.ca_cert], BestAvailableEncryption(b"pw")
    )
    (tmp_path / "k.p12").write_bytes(p12)
    s2 = load_signer(tmp_path / "k.p12", password=b"pw")
    assert [c.subject for c in s2.certificate_chain] == [p.leaf_cert.subject, p.ca_cert.subject]
    with pytest.raises(KeyLoadError, match="does not match the signing certificate"):
        LocalKeySigner(pki("rsa", 4096, "p256").leaf_key, p.chain)
    # an existing file with loose permissions is tightened
    loose = tmp_path / "loose.key"
    loose.write_text("x")
    loose.chmod(0o644)
    write_private_key(loose, p.leaf_key)
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o600


def test_weak_rsa_key_rejected_for_signing():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p = pki("rsa", 2048, "p256")
    with pytest.raises(KeyLoadError, match="RSA key size 1024 bits is too weak"):
        LocalKeySigner(weak, p.chain)


# --- bad input --------------------------------------------------------------------------------


def _leaf(p: SigningPKI, *, eku=ExtendedKeyUsageOID.CODE_SIGNING, key=None, hash_alg=None, days=(0, 365)):
    key = key or p.leaf_key
    b = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                    x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "X"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "bad leaf"),
                ]
            )
        )
        .issuer_name(p.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]) - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
    )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return b.sign(p.ca_key, hash_alg or hashes.SHA256())


class _RawSigner:
    """Signs with an arbitrary key/chain, bypassing LocalKeySigner's checks, to forge bad envelopes."""

    def __init__(self, key, chain, alg):
        self._key, self.certificate_chain, self.algorithm = key, chain, alg

    def sign(self, data: bytes) -> bytes:
        from hallmark.signing.algorithms import pss_padding

        return self._key.sign(data, pss_padding(self.algorithm), self.algorithm.hash())


def _verify(
    tmp_path, env: bytes, mt: str = "application/jose+json", p: SigningPKI | None = None, now=NOW, subject=SUBJECT
):
    p = p or pki()
    return verify_envelope(env, mt, subject, statement(), store_for(tmp_path, p), now)


def test_tampered_payload(tmp_path):
    env = json.loads(build_signature(SUBJECT, pki().signer(), "jws", now=NOW).envelope)
    other = build_payload(Descriptor(SUBJECT.media_type, "sha256:" + "cd" * 32, 1234))
    env["payload"] = base64.urlsafe_b64encode(other).rstrip(b"=").decode()
    res = _verify(tmp_path, json.dumps(env).encode())
    assert "integrity validation failed: signature is invalid" in (res.error or "")


def test_tampered_cose_payload(tmp_path):
    env = cbor2.loads(build_signature(SUBJECT, pki().signer(), "cose", now=NOW).envelope)
    value = list(env.value)
    value[2] = value[2].replace(b"1234", b"1235")
    res = _verify(tmp_path, cbor2.dumps(cbor2.CBORTag(18, value)), "application/cose")
    assert "integrity validation failed: signature is invalid" in (res.error or "")


def test_subject_mismatch(tmp_path):
    env = build_signature(SUBJECT, pki().signer(), "jws", now=NOW).envelope
    res = _verify(tmp_path, env, subject=Descriptor(SUBJECT.media_type, SUBJECT.digest, 99))
    assert "does not match the artifact" in (res.error or "")


def test_trailing_padding_rejected(tmp_path):
    env = json.loads(build_signature(SUBJECT, pki().signer(), "jws", now=NOW).envelope)
    env["signature"] += "="
    res = _verify(tmp_path, json.dumps(env).encode())
    assert "illegal base64 data at input byte" in (res.error or "")


def test_unknown_critical_header(tmp_path):
    p = pki()
    req = SignRequest(
        build_payload(SUBJECT), NOW, extended_attributes={"x.unknown": "1"}, critical_extended=("x.unknown",)
    )
    for mt, mod in (("application/jose+json", jws), ("application/cose", cose)):
        res = _verify(tmp_path, mod.sign(req, p.signer()), mt)
        assert "unsupported critical headers: x.unknown" in (res.error or "")


def test_unknown_signing_scheme(tmp_path):
    req = SignRequest(build_payload(SUBJECT), NOW, signing_scheme="notary.default.x509")
    res = _verify(tmp_path, jws.sign(req, pki().signer()))
    assert "signing scheme 'notary.default.x509' is not supported" in (res.error or "")


@pytest.mark.parametrize(
    "blob", [b"", b"{", b"[]", b'{"payload":"e30","protected":"e30","signature":""}', b'{"signatures":[]}']
)
def test_malformed_jws(tmp_path, blob):
    res = _verify(tmp_path, blob)
    assert (res.error or "").startswith("integrity validation failed: signature envelope is malformed")


@pytest.mark.parametrize(
    "blob",
    [b"", b"\xa0", cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])), cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"", b""]))],
)
def test_malformed_cose(tmp_path, blob):
    res = _verify(tmp_path, blob, "application/cose")
    assert (res.error or "").startswith("integrity validation failed: signature envelope is malformed")


def test_wrong_cert_untrusted(tmp_path):
    env = build_signature(SUBJECT, pki().signer(), "jws", now=NOW).envelope
    res = _verify(tmp_path, env, p=pki("ec", 0, "p384"))
    assert "does not contain any trusted certificate" in (res.error or "")


def test_expired_cert(tmp_path):
    env = build_signature(SUBJECT, pki().signer(), "jws", now=NOW).envelope
    res = _verify(tmp_path, env, now=NOW + dt.timedelta(days=400))
    assert "authenticTimestamp validation failed: verification time is after certificate" in (res.error or "")


def test_missing_code_signing_eku(tmp_path):
    p = pki()
    leaf = _leaf(p, eku=ExtendedKeyUsageOID.SERVER_AUTH)
    env = jws.sign(SignRequest(build_payload(SUBJECT), NOW), LocalKeySigner(p.leaf_key, [leaf, p.ca_cert]))
    res = _verify(tmp_path, env, p=p)
    assert "extended key usage (serverAuth) lacks codeSigning" in (res.error or "")


def _resign_sha1(cert: x509.Certificate, issuer_key) -> x509.Certificate:
    """Re-sign a certificate with SHA-1 via asn1crypto (OpenSSL 3 refuses to build SHA-1 certs)."""
    from asn1crypto import x509 as ax509
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import Encoding

    parsed = ax509.Certificate.load(cert.public_bytes(Encoding.DER))
    tbs = parsed["tbs_certificate"]
    tbs["signature"] = ax509.SignedDigestAlgorithm({"algorithm": "sha1_rsa"})
    sig = issuer_key.sign(tbs.dump(force=True), padding.PKCS1v15(), hashes.SHA1())
    new = ax509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": {"algorithm": "sha1_rsa"}, "signature_value": sig}
    )
    return x509.load_der_x509_certificate(new.dump())


def test_sha1_certificate_rejected(tmp_path):
    p = pki("rsa", 2048, "p256")
    leaf = _resign_sha1(_leaf(p), p.ca_key)
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA1)
    env = jws.sign(SignRequest(build_payload(SUBJECT), NOW), LocalKeySigner(p.leaf_key, [leaf, p.ca_cert]))
    res = _verify(tmp_path, env, p=p)
    assert "is signed with SHA1, which is not allowed" in (res.error or "")


def test_weak_rsa_signature_rejected(tmp_path):
    from hallmark.signing.algorithms import ALGORITHMS

    p = pki("rsa", 2048, "p256")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    leaf = _leaf(p, key=weak)
    env = jws.sign(SignRequest(build_payload(SUBJECT), NOW), _RawSigner(weak, [leaf, p.ca_cert], ALGORITHMS["PS256"]))
    res = _verify(tmp_path, env, p=p)
    assert "RSA key size 1024 bits is too weak" in (res.error or "")


def test_alg_header_must_match_key(tmp_path):
    from hallmark.signing.algorithms import ALGORITHMS

    p = pki("rsa", 2048, "p256")
    env = jws.sign(SignRequest(build_payload(SUBJECT), NOW), _RawSigner(p.leaf_key, p.chain, ALGORITHMS["PS384"]))
    res = _verify(tmp_path, env, p=p)
    assert "does not match the signing certificate's key (PS256)" in (res.error or "")
