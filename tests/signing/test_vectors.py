"""Every real vector in ../shared/data/signing yields the outcome its README states."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import cbor2
import pytest

from hallmark.signing import cose, jws
from hallmark.signing.artifact import LayoutStore, verify_artifact
from hallmark.signing.certs import TrustStore
from hallmark.signing.cosign import (
    CosignError,
    load_containers_image_signature,
    load_public_key,
    verify_simple_signing,
)
from hallmark.signing.envelope import SignRequest, parse_envelope
from hallmark.signing.errors import PolicyError
from hallmark.signing.layout import Descriptor
from hallmark.signing.policy import load_policy
from hallmark.signing.timestamp import TimestampError, parse_token
from hallmark.signing.verify import verify_envelope
from tests.signing.conftest import COSIGN, E2E, E2E_NOW, NGO, NOTARY, make_store

REPO = "localhost:5000/test-repo"


def policy(name: str):
    return load_policy((E2E / "trustpolicies" / name).read_text())


def e2e_store(tmp_path: Path, cert: str = "e2e.crt", extra: dict[str, list[Path]] | None = None) -> TrustStore:
    stores = {"ca:e2e": [E2E / "truststore" / cert], **(extra or {})}
    return TrustStore(make_store(tmp_path, stores))


def run(layout: str, pol: str, store: TrustStore, now: dt.datetime = E2E_NOW, repo: str = REPO):
    return verify_artifact(
        LayoutStore(E2E / "oci-layouts" / layout), "v1", policy(pol), store, repository=repo, now=now
    )


# --- section 1: notation e2e OCI layouts -------------------------------------------------------


def test_e2e_unsigned_layout(vectors, tmp_path):
    res = run("e2e", "trustpolicy.json", e2e_store(tmp_path))
    assert not res.passed and "no signature is associated with" in (res.error or "")


def test_e2e_valid_signature_strict(vectors, tmp_path):
    res = run("e2e-valid-signature", "trustpolicy.json", e2e_store(tmp_path))
    assert res.passed, res.error
    assert (
        res.verified
        and res.verified.signature_manifest
        and res.verified.signature_manifest.startswith("sha256:90ceaff2")
    )


@pytest.mark.parametrize("pol", ["trustpolicy.json", "permissive_trustpolicy.json"])
def test_e2e_untrusted_store_fails(vectors, tmp_path, pol):
    res = run("e2e-valid-signature", pol, e2e_store(tmp_path, "new_e2e.crt"))
    assert not res.passed
    assert "authenticity validation failed" in (res.error or "")
    assert "does not contain any trusted certificate" in (res.error or "")


def test_e2e_untrusted_store_audit_warns(vectors, tmp_path):
    res = run("e2e-valid-signature", "audit_trustpolicy.json", e2e_store(tmp_path, "new_e2e.crt"))
    assert res.passed
    warnings = res.signatures[0].warnings
    assert any("authenticity was set to log" in w and "does not contain any trusted certificate" in w for w in warnings)


@pytest.mark.parametrize("pol", ["trustpolicy.json", "permissive_trustpolicy.json", "audit_trustpolicy.json"])
def test_e2e_invalid_signature(vectors, tmp_path, pol):
    res = run("e2e-invalid-signature", pol, e2e_store(tmp_path))
    assert not res.passed and "integrity validation failed" in (res.error or "")


def test_e2e_invalid_signature_skip(vectors, tmp_path):
    res = run("e2e-invalid-signature", "skip_trustpolicy.json", e2e_store(tmp_path))
    assert res.passed and res.level == "skip"


def test_e2e_expired_signature(vectors, tmp_path):
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    strict = run("e2e-expired-signature", "trustpolicy.json", e2e_store(tmp_path), now)
    assert not strict.passed and "expiry validation failed" in (strict.error or "")
    assert "digital signature has expired" in (strict.error or "")
    for pol in ("permissive_trustpolicy.json", "audit_trustpolicy.json"):
        res = run("e2e-expired-signature", pol, e2e_store(tmp_path), now)
        assert res.passed
        assert any("digital signature has expired" in w for w in res.signatures[0].warnings)


def test_e2e_expired_cert(vectors, tmp_path):
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    store = e2e_store(tmp_path, "expired_e2e.crt")
    strict = run("e2e-with-expired-cert", "trustpolicy.json", store, now)
    assert not strict.passed and "authenticTimestamp validation failed" in (strict.error or "")
    for pol in ("permissive_trustpolicy.json", "audit_trustpolicy.json"):
        res = run("e2e-with-expired-cert", pol, store, now)
        assert res.passed
        assert any(
            "authenticTimestamp was set to log" in w and 'expired at "Tue, 27 Jun 2023 06:10:00 +0000"' in w
            for w in res.signatures[0].warnings
        )


def test_e2e_multiple_signatures(vectors, tmp_path):
    store = LayoutStore(E2E / "oci-layouts" / "e2e-valid-multiple-signatures")
    subject = store.resolve("v1")
    refs = {d.digest[7:15] for d in store.list_referrers(subject)}
    assert refs == {"90ceaff2", "c3ebe4a2"}
    res = run("e2e-valid-multiple-signatures", "trustpolicy.json", e2e_store(tmp_path))
    assert res.passed


def test_e2e_timestamped_signature_inspect(vectors):
    env = (
        E2E
        / "oci-layouts/e2e-with-timestamped-signature/blobs/sha256"
        / "603ff134e97a79cd7a15560b76137c2c4a10451daab11327a7c6f86dac250fee"
    ).read_bytes()
    info = parse_envelope(env, "application/jose+json")
    assert info.algorithm.display == "RSASSA-PSS-SHA-256"
    assert info.expiry == dt.datetime(2025, 1, 21, 12, 39, 46, tzinfo=dt.UTC)
    ts = parse_token(info.timestamp_token or b"")
    assert ts.earliest == dt.datetime(2025, 1, 21, 9, 17, 46, 141000, tzinfo=dt.UTC)
    assert ts.latest == dt.datetime(2025, 1, 21, 9, 17, 47, 141000, tzinfo=dt.UTC)
    store = LayoutStore(E2E / "oci-layouts/e2e-with-timestamped-signature")
    assert store.resolve("v1").digest.startswith("sha256:53b01912")


def test_e2e_timestamped_signature_untrusted_tsa(vectors, tmp_path):
    """The Microsoft TSA root is not shipped: with another tsa root the TSA chain cannot be trusted."""
    cert = tmp_path / "testcert7.crt"
    env = (
        E2E
        / "oci-layouts/e2e-with-timestamped-signature/blobs/sha256"
        / "603ff134e97a79cd7a15560b76137c2c4a10451daab11327a7c6f86dac250fee"
    ).read_bytes()
    cert.write_text(
        "-----BEGIN CERTIFICATE-----\n" + json.loads(env)["header"]["x5c"][0] + "\n-----END CERTIFICATE-----\n"
    )
    store = TrustStore(
        make_store(tmp_path / "ts", {"ca:e2e": [cert], "tsa:e2e": [E2E / "tsa-roots/DigiCertTSARootSHA384.cer"]})
    )
    res = run(
        "e2e-with-timestamped-signature",
        "timestamp_trustpolicy.json",
        store,
        dt.datetime(2025, 1, 21, 10, tzinfo=dt.UTC),
    )
    assert not res.passed
    assert "authenticTimestamp validation failed" in (res.error or "")
    assert "certificate signed by unknown authority" in (res.error or "")


def test_e2e_invalid_timestamp_token(vectors):
    env = (
        E2E
        / "oci-layouts/e2e-with-invalid-timestamped-signature/blobs/sha256"
        / "8d2e70ffc2af68b7f2df6f30dfefcb7bcda1db5f9ac2566fc8c6c2248c8d4c5f"
    ).read_bytes()
    info = parse_envelope(env, "application/jose+json")
    with pytest.raises(TimestampError, match="failed to parse timestamp countersignature"):
        parse_token(info.timestamp_token or b"")


VALID_POLICIES = [
    "trustpolicy.json",
    "registry_scope_trustpolicy.json",
    "multiple_registry_scope_trustpolicy.json",
    "any_registry_scope_trust_policy.json",
    "multiple_trust_store_trustpolicy.json",
    "valid_trusted_identity_trustpolicy.json",
    "multiple_trusted_identity_trustpolicy.json",
    "multi_statements_with_wildcard_registry_scope_trustpolicy.json",
    "override_strict_trustpolicy.json",
    "override_permissive_trustpolicy.json",
    "override_audit_trustpolicy.json",
]


@pytest.mark.parametrize("pol", VALID_POLICIES)
def test_e2e_valid_policies(vectors, tmp_path, pol):
    store = e2e_store(tmp_path, extra={"ca:e2e-new": [E2E / "truststore/new_e2e.crt"]})
    scopes = [s for st in policy(pol).statements for s in st.registry_scopes if s != "*"]
    res = run("e2e-valid-signature", pol, store, repo=scopes[0] if scopes else REPO)
    assert res.passed, res.error


def test_override_strict_logs_untrusted(vectors, tmp_path):
    res = run("e2e-valid-signature", "override_strict_trustpolicy.json", e2e_store(tmp_path, "new_e2e.crt"))
    assert res.passed and res.signatures[0].warnings


@pytest.mark.parametrize("pol", ["override_permissive_trustpolicy.json", "override_audit_trustpolicy.json"])
def test_overrides_enforce_expiry(vectors, tmp_path, pol):
    res = run("e2e-expired-signature", pol, e2e_store(tmp_path), dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert not res.passed and "expiry validation failed" in (res.error or "")


UNSET = "either missing trust stores or trusted identities, both must be specified"
INVALID_POLICIES = {
    "override_integrity_for_permissive_trustpolicy.json": '"integrity" verification can not be overridden',
    "empty_registry_scope_trustpolicy.json": "has zero registry scopes",
    "malformed_registry_scope_trustpolicy.json": "is not valid, make sure it is a fully qualified repository",
    "overlapped_registry_scope_trustpolicy.json": "is present in multiple oci trust policy statements",
    "wildcard_plus_other_registry_scope_trustpolicy.json": "wildcard scope cannot be used in conjunction",
    "multi_statements_with_the_same_registry_scope_trustpolicy.json": "is present in multiple oci trust policy",
    "multi_statements_with_the_same_name_trustpolicy.json": 'statements use the same name "e2e"',
    "multi_statements_with_multi_wildcard_registry_scope_trustpolicy.json": 'registry scope "*" is present in multiple',
    "unset_trust_store_trustpolicy.json": UNSET,
    "unset_trusted_identity_trustpolicy.json": UNSET,
    "malformed_trust_store_trustpolicy.json": "unsupported trust store name",
    "wildcard_trust_store_trustpolicy.json": 'malformed trust store value "*"',
    "overlapped_trust_store_trustpolicy.json": "overlapping trust stores",
    "malformed_trusted_identity_trustpolicy.json": "x509.subject",
    "empty_trusted_identity_trustpolicy.json": "has an empty trusted identity",
    "overlapped_trusted_identity_trustpolicy.json": "has overlapping x509 trustedIdentities",
    "wildcard_plus_other_trusted_identity_trustpolicy.json": "wildcard identity cannot be used in conjunction",
    "missing_country_trusted_identity_trustpolicy.json": 'has no mandatory RDN attribute for "C"',
    "missing_state_trusted_identity_trustpolicy.json": 'has no mandatory RDN attribute for "ST"',
    "missing_organization_trusted_identity_trustpolicy.json": 'has no mandatory RDN attribute for "O"',
    "invalid_format_trustpolicy.json": "not valid JSON",
}


@pytest.mark.parametrize("name", sorted(INVALID_POLICIES))
def test_invalid_policy_documents(vectors, name):
    with pytest.raises(PolicyError) as exc:
        policy(name)
    assert INVALID_POLICIES[name] in str(exc.value)


def test_policy_without_applicable_statement(vectors, tmp_path):
    with pytest.raises(PolicyError, match="has no applicable oci trust policy statement"):
        run("e2e-valid-signature", "invalid_registry_scope_trustpolicy.json", e2e_store(tmp_path))


def test_policy_missing_trust_store(vectors, tmp_path):
    with pytest.raises(PolicyError, match='the trust store "invalid_store" of type "ca" does not exist'):
        run("e2e-valid-signature", "invalid_trust_store_trustpolicy.json", e2e_store(tmp_path))


def test_policy_identity_mismatch(vectors, tmp_path):
    res = run("e2e-valid-signature", "invalid_trusted_identity_trustpolicy.json", e2e_store(tmp_path))
    assert not res.passed and "does not match the X.509 trusted identities" in (res.error or "")


@pytest.mark.parametrize(
    "name",
    [
        "quickstart_trustpolicy.json",
        "generate_test_trustpolicy.json",
        "timestamp_trustpolicy.json",
        "timestamp_after_cert_expiry_trustpolicy.json",
    ],
)
def test_other_valid_policy_documents_parse(vectors, name):
    assert policy(name).statements


def test_blob_policies_are_not_oci_policies(vectors):
    """Blob trust policies have no registryScopes; as OCI policies they are rejected, not misread."""
    for name in ("trustpolicy.blob.json", "blob_trust_policy.json"):
        with pytest.raises(PolicyError, match="has zero registry scopes"):
            policy(name)


def test_blob_signatures_inspect(vectors):
    # The README's tree (signing time Dec 31 08:05:29 2024) is the JWS one; the COSE file was signed on
    # 2025-01-07 08:42:43 by testcert3, and its timestamp brackets that time instead.
    times = {
        "blob.jws.sig": dt.datetime(2024, 12, 31, 8, 5, 29, tzinfo=dt.UTC),
        "blob.cose.sig": dt.datetime(2025, 1, 7, 8, 42, 43, tzinfo=dt.UTC),
    }
    for name, mt in (("blob.jws.sig", "application/jose+json"), ("blob.cose.sig", "application/cose")):
        info = parse_envelope((E2E / "blob-signatures" / name).read_bytes(), mt)
        target = json.loads(info.payload)["targetArtifact"]
        assert target == {
            "mediaType": "application/octet-stream",
            "digest": "sha256:c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
            "size": 11357,
        }
        assert info.signing_time == times[name]
        ts = parse_token(info.timestamp_token or b"")
        assert ts.earliest.replace(microsecond=0) == times[name]
        assert ts.latest.replace(microsecond=0) == times[name] + dt.timedelta(seconds=1)
        assert not info.extended_attributes
        # the signature itself is intact (integrity with the x5c leaf)
        from hallmark.signing.algorithms import verify_raw

        verify_raw(info.certificate_chain[0].public_key(), info.algorithm, info.signed_bytes, info.signature)


def test_blob_malformed(vectors):
    from hallmark.signing.errors import EnvelopeError

    with pytest.raises(EnvelopeError, match="not valid JSON"):
        parse_envelope((E2E / "blob-signatures/malformed.jws.sig").read_bytes(), "application/jose+json")


# --- section 2: notation-go envelopes ---------------------------------------------------------

NET_MONITOR = Descriptor(
    "application/vnd.docker.distribution.manifest.v2+json",
    "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e",
    528,
)
NGO_NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def ngo_policy(level: str, stores: list[str], identity: str = "*"):
    doc = {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": "test-statement-name",
                "registryScopes": ["registry.acme-rockets.io/software/net-monitor"],
                "signatureVerification": {"level": level},
                "trustStores": stores,
                "trustedIdentities": [identity],
            }
        ],
    }
    return load_policy(json.dumps(doc)).statements[0]


NGO_STORE = TrustStore(NGO / "truststore")
IDENT = "x509.subject:CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US"


def ngo_verify(name: str, level: str, stores: list[str], identity: str = IDENT, subject=NET_MONITOR, now=NGO_NOW):
    data = (NGO / "envelopes" / name).read_bytes()
    return verify_envelope(data, "application/jose+json", subject, ngo_policy(level, stores, identity), NGO_STORE, now)


@pytest.mark.parametrize("level", ["strict", "permissive", "audit"])
@pytest.mark.parametrize(
    ("prefix", "store"), [("ca", "ca:valid-trust-store"), ("sa", "signingAuthority:valid-trust-store")]
)
def test_ngo_valid(vectors, level, prefix, store):
    res = ngo_verify(f"{prefix}_valid_sig_env.json", level, [store])
    assert res.passed, res.error
    assert {c.check: c.ok for c in res.checks}["expiry"]


@pytest.mark.parametrize(
    ("prefix", "store"), [("ca", "ca:valid-trust-store"), ("sa", "signingAuthority:valid-trust-store")]
)
def test_ngo_invalid_padding(vectors, prefix, store):
    for level in ("strict", "permissive", "audit"):
        res = ngo_verify(f"{prefix}_invalid_sig_env.json", level, [store])
        assert not res.passed
        assert "integrity validation failed" in (res.error or "")
        assert "illegal base64 data at input byte 242" in (res.error or "")


@pytest.mark.parametrize(
    ("prefix", "store"), [("ca", "ca:valid-trust-store"), ("sa", "signingAuthority:valid-trust-store")]
)
def test_ngo_expired(vectors, prefix, store):
    res = ngo_verify(f"{prefix}_expired_sig_env.json", "strict", [store])
    assert not res.passed
    assert 'digital signature has expired on "Fri, 29 Jul 2022 23:59:00 +0000"' in (res.error or "")
    for level in ("permissive", "audit"):
        res = ngo_verify(f"{prefix}_expired_sig_env.json", level, [store])
        assert res.passed and any("has expired" in w for w in res.warnings)


def test_ngo_untrusted_store(vectors):
    res = ngo_verify("ca_valid_sig_env.json", "strict", ["ca:valid-trust-store-2"])
    assert not res.passed and "does not contain any trusted certificate" in (res.error or "")


def test_ngo_identity_mismatch(vectors):
    res = ngo_verify(
        "ca_valid_sig_env.json",
        "strict",
        ["ca:valid-trust-store"],
        "x509.subject:CN=LOL,O=DummyOrg,L=Hyderabad,ST=TG,C=IN",
    )
    assert not res.passed and "does not match the X.509 trusted identities" in (res.error or "")


@pytest.mark.parametrize(
    "name",
    [
        "ca_plugin_sig_env.json",
        "sa_plugin_sig_env.json",
        "ca_compatible_pluginver_sig_env_1.0.0.json",
        "ca_incompatible_pluginver_sig_env_1.0.9.json",
    ],
)
def test_ngo_plugin_envelopes_fail_without_plugin_support(vectors, name):
    store = "signingAuthority:valid-trust-store" if name.startswith("sa") else "ca:valid-trust-store"
    for level in ("strict", "permissive", "audit"):
        res = ngo_verify(name, level, [store], identity="*", subject=None)
        assert not res.passed
        assert "unsupported critical headers" in (res.error or "")
        assert "io.cncf.notary.verificationPlugin" in (res.error or "")


def test_ngo_metadata_envelope(vectors):
    data = (NGO / "envelopes/sig_env_with_metadata.json").read_bytes()
    info = parse_envelope(data, "application/jose+json")
    annotations = json.loads(info.payload)["targetArtifact"]["annotations"]
    assert annotations == {"io.wabbit-networks.buildId": "123", "io.wabbit-networks.buildTime": "1672944615"}
    res = verify_envelope(
        data, "application/jose+json", None, ngo_policy("audit", ["ca:valid-trust-store"], "*"), NGO_STORE, NGO_NOW
    )
    assert res.passed, res.error


TS_POLICY = {"ca": "ca:valid-trust-store", "tsa": "tsa:test-timestamp"}
TS_NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def ts_statement(tsa: str | None = "tsa:test-timestamp", verify_timestamp: str = "always"):
    stores = ["ca:valid-trust-store"] + ([tsa] if tsa else [])
    doc = {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": "ts",
                "registryScopes": ["*"],
                "signatureVerification": {"level": "strict", "verifyTimestamp": verify_timestamp},
                "trustStores": stores,
                "trustedIdentities": ["*"],
            }
        ],
    }
    return load_policy(json.dumps(doc)).statements[0]


def ts_verify(name: str, statement, now=TS_NOW):
    data = (NGO / "timestamp" / name).read_bytes()
    mt = "application/jose+json" if data.lstrip().startswith(b"{") else "application/cose"
    return verify_envelope(data, mt, None, statement, NGO_STORE, now)


def _trusting_store(tmp_path: Path, name: str, tsa_dir: str = "test-timestamp") -> TrustStore:
    """valid-trust-store lacks the testTSA self-signed certs of the *Expired* vectors; add the x5c leaf."""
    data = (NGO / "timestamp" / name).read_bytes()
    mt = "application/jose+json" if data.lstrip().startswith(b"{") else "application/cose"
    leaf = parse_envelope(data, mt).certificate_chain[0]
    from cryptography.hazmat.primitives.serialization import Encoding

    root = make_store(
        tmp_path,
        {
            "ca:valid-trust-store": [],
            f"tsa:{tsa_dir}": list((NGO / "truststore/x509/tsa" / tsa_dir).iterdir()),
        },
    )
    (root / "x509/ca/valid-trust-store/leaf.crt").write_bytes(leaf.public_bytes(Encoding.PEM))
    return TrustStore(root)


@pytest.mark.parametrize("name", ["jwsWithTimestamp.sig", "coseWithTimestamp.sig"])
@pytest.mark.parametrize("mode", ["always", "afterCertExpiry"])
def test_timestamp_valid(vectors, name, mode):
    res = ts_verify(name, ts_statement(verify_timestamp=mode))
    assert res.passed, res.error


@pytest.mark.parametrize("name", ["jwsExpiredWithTimestamp.sig", "coseExpiredWithTimestamp.sig"])
def test_timestamp_expired_cert_covered_by_timestamp(vectors, tmp_path, name):
    store = _trusting_store(tmp_path, name)
    data = (NGO / "timestamp" / name).read_bytes()
    mt = "application/jose+json" if name.startswith("jws") else "application/cose"
    res = verify_envelope(data, mt, None, ts_statement(), store, TS_NOW)
    assert res.passed, res.error
    no_tsa = verify_envelope(data, mt, None, ts_statement(tsa=None), store, TS_NOW)
    assert not no_tsa.passed
    assert 'it was expired at "Tue, 18 Jun 2024 07:30:31 +0000"' in (no_tsa.error or "")


def test_timestamp_missing(vectors):
    res = ts_verify("withoutTimestamp.sig", ts_statement())
    assert "no timestamp countersignature was found in the signature envelope" in (res.error or "")


def test_timestamp_before_not_before(vectors):
    res = ts_verify("timestampBeforeNotBefore.sig", ts_statement())
    assert "timestamp can be before certificate" in (res.error or "")
    assert 'it will be valid from "Fri, 18 Sep 2099 11:54:34 +0000"' in (res.error or "")


def test_timestamp_after_not_after(vectors, tmp_path):
    store = _trusting_store(tmp_path, "timestampAfterNotAfter.sig")
    data = (NGO / "timestamp/timestampAfterNotAfter.sig").read_bytes()
    res = verify_envelope(data, "application/cose", None, ts_statement(), store, TS_NOW)
    assert "timestamp can be after certificate" in (res.error or "")
    assert 'it was expired at "Tue, 18 Sep 2001 11:54:34 +0000"' in (res.error or "")


def test_timestamp_mismatched_tsa_root(vectors, tmp_path):
    store = _trusting_store(tmp_path, "jwsWithTimestamp.sig", tsa_dir="test-mismatch")
    data = (NGO / "timestamp/jwsWithTimestamp.sig").read_bytes()
    res = verify_envelope(data, "application/jose+json", None, ts_statement("tsa:test-mismatch"), store, TS_NOW)
    assert "certificate signed by unknown authority" in (res.error or "")


@pytest.mark.parametrize(
    ("name", "mt"), [("jws_signature.sig", "application/jose+json"), ("cose_signature.sig", "application/cose")]
)
def test_alpine_signatures(vectors, tmp_path, name, mt):
    manifest = next((NGO / "alpine-oci").glob("manifest-sha256-*.json"))
    data = manifest.read_bytes()
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert manifest.name == f"manifest-sha256-{digest[7:]}.json"
    subject = Descriptor("application/vnd.oci.image.manifest.v1+json", digest, len(data))
    env = (NGO / "alpine-oci" / name).read_bytes()
    # integrity with the x5c leaf; not trusted by any shipped store
    res = verify_envelope(env, mt, subject, ngo_policy("strict", ["ca:valid-trust-store"], "*"), NGO_STORE, NGO_NOW)
    assert not res.passed and "does not contain any trusted certificate" in (res.error or "")
    assert res.checks[0].check == "integrity" and res.checks[0].ok
    store = _trusting_store(tmp_path, "jwsWithTimestamp.sig")  # any store, then anchor the alpine leaf itself
    leaf = parse_envelope(env, mt).certificate_chain[0]
    from cryptography.hazmat.primitives.serialization import Encoding

    (tmp_path / "x509/ca/valid-trust-store/leaf.crt").write_bytes(leaf.public_bytes(Encoding.PEM))
    ok = verify_envelope(env, mt, subject, ngo_policy("strict", ["ca:valid-trust-store"], "*"), store, NGO_NOW)
    assert ok.passed, ok.error
    wrong = Descriptor(subject.media_type, "sha256:" + "0" * 64, subject.size)
    bad = verify_envelope(env, mt, wrong, ngo_policy("strict", ["ca:valid-trust-store"], "*"), store, NGO_NOW)
    assert not bad.passed and "does not match the artifact" in (bad.error or "")


# --- section 3: conformance encodings ------------------------------------------------------


def test_jws_conformance(vectors):
    expected = json.loads((NOTARY / "conformance/jws-conformance.json").read_text())
    req = SignRequest(
        payload=b'{"key":"hello JWS"}',
        signing_time=dt.datetime(2022, 8, 29, 13, 50, tzinfo=dt.UTC),
        expiry=dt.datetime(2099, 8, 30, 13, 50, tzinfo=dt.UTC),
        signing_agent="NotationConformanceTest/1.0.0",
        extended_attributes={
            "signedCritKey1": "signedCritValue1",
            **{f"signedKey{i}": "signedValue1" for i in range(1, 5)},
        },
        critical_extended=("signedCritKey1",),
    )
    assert jws.encode_protected(jws.protected_header(req, "ES256")) == expected["protected"]
    assert base64.urlsafe_b64encode(req.payload).rstrip(b"=").decode() == expected["payload"]


def test_cose_conformance(vectors):
    c = json.loads((NOTARY / "conformance/cose-conformance.json").read_text())
    req = SignRequest(
        payload=bytes.fromhex(c["payload"]),
        signing_time=dt.datetime.fromtimestamp(c["signingTime"], dt.UTC),
        expiry=dt.datetime.fromtimestamp(c["expiry"], dt.UTC),
        signing_agent="NotationConformanceTest/1.0.0",
        extended_attributes={"signedCritKey1": "signedCritValue1", "signedKey1": "signedValue1"},
        critical_extended=("signedCritKey1",),
    )
    protected = cbor2.dumps(cose.protected_header(req, -38))
    assert protected.hex().upper() == c["protectedHeaders"]["cborHex"]
    expected = bytes.fromhex(c["expectedOutput"]["cborHex"])
    signature = cbor2.loads(expected).value[3]
    unprotected = {"io.cncf.notary.signingAgent": "NotationConformanceTest/1.0.0"}
    assert cbor2.dumps(cose.deterministic_map(unprotected)).hex().upper() == c["unprotectedHeaders"]["cborHex"]
    assert cose.encode_sign1(protected, unprotected, req.payload, signature) == expected


# --- section 4: cosign ------------------------------------------------------------------------


def _digest(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_cosign_valid(vectors):
    key = load_public_key((COSIGN / "cosign.pub").read_bytes())
    digest = _digest(COSIGN / "dir-img-cosign-valid/manifest.json")
    assert digest.startswith("sha256:634a8f35")
    for sig in ("signature-1", "signature-2"):
        doc = verify_simple_signing(
            load_containers_image_signature((COSIGN / "dir-img-cosign-valid" / sig).read_bytes()), key, digest
        )
        assert doc["critical"]["type"] == "cosign container image signature"


def test_cosign_unknown_key_rejected_but_other_valid(vectors):
    key = load_public_key((COSIGN / "cosign.pub").read_bytes())
    digest = _digest(COSIGN / "dir-img-cosign-valid/manifest.json")
    with pytest.raises(CosignError, match="does not verify"):
        verify_simple_signing(
            load_containers_image_signature((COSIGN / "unknown-cosign-key.signature").read_bytes()), key, digest
        )
    verify_simple_signing(
        load_containers_image_signature((COSIGN / "dir-img-cosign-valid/signature-1").read_bytes()), key, digest
    )


def test_cosign_modified_manifest(vectors):
    key = load_public_key((COSIGN / "cosign.pub").read_bytes())
    digest = _digest(COSIGN / "dir-img-cosign-modified-manifest/manifest.json")
    assert digest.startswith("sha256:d9dcafdb")
    with pytest.raises(CosignError, match="does not match the manifest digest"):
        verify_simple_signing(
            load_containers_image_signature((COSIGN / "dir-img-cosign-valid/signature-1").read_bytes()), key, digest
        )


def test_cosign_rekor_signed_by_cosign2(vectors):
    sig = load_containers_image_signature((COSIGN / "dir-img-cosign-key-rekor-valid/signature-1").read_bytes())
    digest = _digest(COSIGN / "dir-img-cosign-key-rekor-valid/manifest.json")
    assert digest.startswith("sha256:0489474d")
    verify_simple_signing(sig, load_public_key((COSIGN / "cosign2.pub").read_bytes()), digest)
    with pytest.raises(CosignError, match="does not verify"):
        verify_simple_signing(sig, load_public_key((COSIGN / "cosign.pub").read_bytes()), digest)


def test_cosign_other_attachment_rejected(vectors):
    sig = load_containers_image_signature((COSIGN / "dir-img-cosign-other-attachment/signature-1").read_bytes())
    with pytest.raises(CosignError, match="not a cosign simple-signing signature"):
        verify_simple_signing(sig, load_public_key((COSIGN / "cosign.pub").read_bytes()), "sha256:" + "0" * 64)
