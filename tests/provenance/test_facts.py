"""Pure parts of provenance: repository normalisation, CI variables, SLSA predicates, DSSE checks."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from hallmark.provenance import dsse
from hallmark.provenance.facts import FactError, ci_from_env, from_ci, from_statement, normalise_repo
from tests.provenance.attest import COMMIT_B, slsa_v1

DIGEST = "sha256:" + "1" * 64


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://github.com/acme/shop", "https://github.com/acme/shop"),
        ("https://github.com/acme/shop.git/", "https://github.com/acme/shop"),
        ("git@github.com:acme/shop.git", "https://github.com/acme/shop"),
        ("ssh://git@gitlab.example.com:2222/g/p.git", "https://gitlab.example.com/g/p"),
        ("git+https://github.com/acme/shop@refs/heads/main", "https://github.com/acme/shop"),
        ("https://acme:secret@dev.azure.com/acme/shop/_git/shop", "https://dev.azure.com/acme/shop/_git/shop"),
        ("HTTPS://GitHub.com/Acme/Shop", "https://github.com/Acme/Shop"),
        ("github.com/acme/shop", "https://github.com/acme/shop"),
        ("https://git.internal:8443/a/b", "https://git.internal:8443/a/b"),
        ("https://github.com", None),
        ("not a repository", None),
        ("", None),
        (42, None),
    ],
)
def test_normalise_repo(raw: object, expected: str | None) -> None:
    assert normalise_repo(raw) == expected


def test_gitlab_variables() -> None:
    env = {
        "CI_PROJECT_URL": "https://gitlab.example.com/acme/shop",
        "CI_COMMIT_SHA": COMMIT_B,
        "CI_CONFIG_PATH": ".gitlab-ci.yml",
        "CI_PIPELINE_ID": "55",
        "CI_PIPELINE_URL": "https://gitlab.example.com/acme/shop/-/pipelines/55",
        "GITLAB_USER_LOGIN": "jdoe",
        "CI_COMMIT_REF_NAME": "main",
    }
    assert ci_from_env(env) == {
        "ci": "gitlab-ci",
        "source_repo": "https://gitlab.example.com/acme/shop",
        "revision": COMMIT_B,
        "pipeline": ".gitlab-ci.yml",
        "run_id": "55",
        "run_url": "https://gitlab.example.com/acme/shop/-/pipelines/55",
        "actor": "jdoe",
        "ref": "main",
    }
    with pytest.raises(FactError, match=r"GITHUB_SHA.*BUILD_SOURCEVERSION.*CI_COMMIT_SHA"):
        ci_from_env({"GITHUB_REPOSITORY": "acme/shop"})  # no commit: not enough to say anything


def test_ci_values_are_checked() -> None:
    with pytest.raises(FactError, match="nothing to record"):
        from_ci({"pipeline": "build"}, DIGEST, "api:x")
    with pytest.raises(FactError, match="run_url"):
        from_ci({"revision": COMMIT_B, "run_url": "ftp://x/y"}, DIGEST, "api:x")


def test_slsa_v02_buildkit_shape() -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "x", "digest": {"sha256": DIGEST[7:]}}],
        "predicate": {
            "builder": {"id": "https://github.com/acme/shop/actions/runs/9"},
            "buildType": "https://mobyproject.org/buildkit@v1",
            "invocation": {"configSource": {"entryPoint": "Dockerfile"}},
            "metadata": {
                "buildInvocationId": "k3x9",
                "https://mobyproject.org/buildkit@v1#metadata": {
                    "vcs": {"source": "https://github.com/acme/shop.git", "revision": COMMIT_B}
                },
            },
        },
    }
    src = from_statement(statement, DIGEST, "sha256:ref")
    assert (src.kind, src.source_repo, src.revision, src.pipeline, src.run_id, src.run_url) == (
        "slsa",
        "https://github.com/acme/shop",
        COMMIT_B,
        "Dockerfile",
        "k3x9",
        None,
    )
    assert src.builder_id == "https://github.com/acme/shop/actions/runs/9"


def _env(payload: bytes, sig: bytes) -> dsse.Envelope:
    return dsse.Envelope(dsse.INTOTO_PAYLOAD_TYPE, payload, [("", sig)])


def test_pae_is_the_dsse_encoding() -> None:
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_signature_encodings_and_key_types(tmp_path: Path) -> None:
    payload = json.dumps(slsa_v1(DIGEST)).encode()
    data = dsse.pae(dsse.INTOTO_PAYLOAD_TYPE, payload)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    for name, k in (("ec", ec_key), ("rsa", rsa_key), ("ed", ed_key)):
        pem = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (keys_dir / f"{name}.pub").write_bytes(pem)
    (keys_dir / "junk.pub").write_bytes(b"not a key")  # skipped, not fatal
    keys = dsse.load_trusted_keys(tmp_path)
    assert sorted(k.name for k in keys) == ["keys/ec.pub", "keys/ed.pub", "keys/rsa.pub"]
    der = ec_key.sign(data, ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    pss = rsa_key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    for sig, who in ((der, "ec"), (raw, "ec"), (pss, "rsa"), (ed_key.sign(data), "ed")):
        verified, detail = dsse.verify(_env(payload, sig), keys, True)
        assert verified is True and f"keys/{who}.pub" in detail
    assert dsse.verify(_env(payload + b" ", der), keys, True)[0] is False
    assert dsse.verify(_env(payload, der), [], False) == (
        False,
        "no trust store is configured (signing.trust_store); signature key ids: none given",
    )
    assert dsse.verify(dsse.Envelope(dsse.INTOTO_PAYLOAD_TYPE, payload, []), keys, True)[0] is None


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(issuer_key, hashes.SHA256())
    )


def test_sigstore_bundle_certificate_must_chain_to_the_trust_store(tmp_path: Path) -> None:
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Acme CA", ca_key, "Acme CA", ca_key)
    leaf = _cert("builder@acme", leaf_key, "Acme CA", ca_key)
    payload = json.dumps(slsa_v1(DIGEST)).encode()
    sig = leaf_key.sign(dsse.pae(dsse.INTOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()}
        },
        "dsseEnvelope": {
            "payloadType": dsse.INTOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"sig": base64.b64encode(sig).decode()}],
        },
    }
    env, statement = dsse.read_attestation(json.dumps(bundle).encode())
    assert env is not None and statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert dsse.verify(env, [], True)[0] is False
    store = tmp_path / "x509" / "ca" / "acme"
    store.mkdir(parents=True)
    (store / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    verified, detail = dsse.verify(env, dsse.load_trusted_keys(tmp_path), True)
    assert verified is True and "x509/ca/acme/ca.crt" in detail


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"payloadType": "text/plain", "payload": "aGk=", "signatures": []}, "is not application/vnd.in-toto+json"),
        ({"payloadType": dsse.INTOTO_PAYLOAD_TYPE, "payload": "aGk=", "signatures": "x"}, "must be a list"),
        ({"payloadType": dsse.INTOTO_PAYLOAD_TYPE, "payload": "aGk=", "signatures": [{"sig": "%%"}]}, "base64"),
        ({"payloadType": dsse.INTOTO_PAYLOAD_TYPE, "payload": "aGk="}, "payload is not JSON"),
    ],
)
def test_malformed_envelopes(doc: dict[str, object], reason: str) -> None:
    with pytest.raises(dsse.DsseError, match=re.escape(reason)):
        dsse.read_attestation(json.dumps(doc).encode())
