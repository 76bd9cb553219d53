"""DSSE envelopes (and Sigstore bundles that carry one): parsing, PAE, and signature checks.

A signature counts as verified only when it checks out, over the DSSE pre-authentication
encoding of the payload, with a key Hallmark trusts: a PEM public key in ``<trust_store>/keys/``
(``cosign.pub`` and the like), the key of a certificate in the trust store's ``ca`` or
``signingAuthority`` stores, or a certificate a Sigstore bundle carries that such a CA issued.
Verdicts: True (verified), False (signed, but not by a trusted key or not validly), None (no
signature at all). The detail says which key, or why not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
INTOTO_MEDIA_TYPE = "application/vnd.in-toto+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
SIGSTORE_BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
# What an attestation layer or artifact may be typed as (buildkit, cosign, oras, GitHub attestations).
ATTESTATION_TYPES = (DSSE_MEDIA_TYPE, INTOTO_MEDIA_TYPE)
MAX_SIGNATURES = 16
MAX_KEYS = 256
_KEY_SUFFIXES = {".pub", ".pem", ".crt", ".cer"}  # never .key: private keys stay unread
_URLSAFE = str.maketrans("-_", "+/")

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class DsseError(ValueError):
    """An envelope, bundle or payload that is malformed."""


def is_attestation_type(media_type: object) -> bool:
    return isinstance(media_type, str) and (
        media_type in ATTESTATION_TYPES or media_type.startswith(SIGSTORE_BUNDLE_PREFIX)
    )


@dataclass
class Envelope:
    payload_type: str
    payload: bytes
    signatures: list[tuple[str, bytes]]  # (keyid, signature)
    certificates: list[x509.Certificate] = field(default_factory=list)  # a Sigstore bundle's, leaf first


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``DSSEv1 <len> <type> <len> <body>``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def b64decode(value: object, what: str) -> bytes:
    """Standard or URL-safe base64, padded or not (both are allowed by DSSE); DsseError otherwise."""
    if not isinstance(value, str):
        raise DsseError(f"{what} is not a base64 string")
    text = value.strip().translate(_URLSAFE)
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise DsseError(f"{what} is not valid base64") from exc


def parse_envelope(doc: Any) -> Envelope:
    """A DSSE envelope JSON object; DsseError names the first thing wrong."""
    if not isinstance(doc, dict):
        raise DsseError("the DSSE envelope is not a JSON object")
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise DsseError("the DSSE envelope has no payloadType")
    payload = b64decode(doc.get("payload"), "the DSSE payload")
    sigs = doc.get("signatures")
    if sigs is None:
        sigs = []
    if not isinstance(sigs, list) or len(sigs) > MAX_SIGNATURES:
        raise DsseError(f"the DSSE signatures must be a list of at most {MAX_SIGNATURES}")
    out: list[tuple[str, bytes]] = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict):
            raise DsseError(f"DSSE signature {i} is not a JSON object")
        keyid = s.get("keyid") or ""
        out.append((str(keyid)[:200], b64decode(s.get("sig"), f"DSSE signature {i}")))
    return Envelope(payload_type, payload, out)


def parse_bundle(doc: dict[str, Any]) -> Envelope:
    """The DSSE envelope of a Sigstore bundle, with the certificates it carries (if any)."""
    env = parse_envelope(doc.get("dsseEnvelope"))
    material = doc.get("verificationMaterial")
    material = material if isinstance(material, dict) else {}
    raws: list[object] = []
    chain = material.get("x509CertificateChain")
    if isinstance(chain, dict) and isinstance(chain.get("certificates"), list):
        raws = [c.get("rawBytes") for c in chain["certificates"] if isinstance(c, dict)]
    elif isinstance(material.get("certificate"), dict):
        raws = [material["certificate"].get("rawBytes")]
    for raw in raws[:8]:
        try:
            env.certificates.append(x509.load_der_x509_certificate(b64decode(raw, "a bundle certificate")))
        except ValueError as exc:
            raise DsseError(f"a certificate in the Sigstore bundle cannot be read: {exc}") from exc
    return env


def read_attestation(data: bytes) -> tuple[Envelope | None, Any]:
    """(envelope or None, the in-toto statement as parsed JSON) from a layer's bytes.

    The layer may be a DSSE envelope, a Sigstore bundle holding one, or a bare statement
    (buildkit's unsigned attestations).
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DsseError(f"the attestation is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(doc, dict):
        raise DsseError("the attestation is not a JSON object")
    if "dsseEnvelope" in doc:
        env: Envelope | None = parse_bundle(doc)
    elif "payloadType" in doc or "signatures" in doc or "payload" in doc:
        env = parse_envelope(doc)
    else:
        return None, doc
    assert env is not None
    if env.payload_type != INTOTO_PAYLOAD_TYPE:
        raise DsseError(f"the DSSE payloadType {env.payload_type[:100]!r} is not {INTOTO_PAYLOAD_TYPE}")
    try:
        return env, json.loads(env.payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DsseError("the DSSE payload is not JSON") from exc


# -- trusted keys ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustedKey:
    name: str  # where it came from: keys/ci.pub, x509/ca/acme/root.crt
    key: PublicKey
    fingerprint: str  # sha256 hex of the DER SubjectPublicKeyInfo
    certificate: x509.Certificate | None = None

    def matches(self, keyid: str) -> bool:
        stem = Path(self.name).stem
        return bool(keyid) and keyid.lower().removeprefix("sha256:") in (self.fingerprint, stem.lower())


def _fingerprint(key: PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _usable(key: object) -> PublicKey | None:
    return key if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey) else None


def load_trusted_keys(trust_store: str | Path | None) -> list[TrustedKey]:
    """Every key the trust store holds for attestations; unreadable files are skipped (one bad file
    must not turn every verdict into a failure)."""
    if not trust_store:
        return []
    root = Path(trust_store)
    x509_root = root / "x509" if (root / "x509").is_dir() else root
    files: list[tuple[str, Path]] = []
    if (root / "keys").is_dir():
        files += [(f"keys/{p.name}", p) for p in sorted((root / "keys").iterdir())]
    for store_type in ("ca", "signingAuthority"):
        base = x509_root / store_type
        if base.is_dir():
            for folder in sorted(p for p in base.iterdir() if p.is_dir()):
                files += [(f"x509/{store_type}/{folder.name}/{p.name}", p) for p in sorted(folder.iterdir())]
    out: list[TrustedKey] = []
    for name, path in files:
        if not path.is_file() or path.suffix.lower() not in _KEY_SUFFIXES or len(out) >= MAX_KEYS:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        out.extend(_keys_in(name, data))
    return out


def _keys_in(name: str, data: bytes) -> list[TrustedKey]:
    try:
        if b"-----BEGIN CERTIFICATE" in data:
            certs = x509.load_pem_x509_certificates(data)
        elif b"-----BEGIN" in data:
            key = _usable(serialization.load_pem_public_key(data))
            return [TrustedKey(name, key, _fingerprint(key))] if key is not None else []
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        return []
    out = []
    for cert in certs:
        key = _usable(cert.public_key())
        if key is not None:
            out.append(TrustedKey(name, key, _fingerprint(key), cert))
    return out


def _check(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Does ``signature`` over ``data`` verify with ``key`` (the encodings DSSE signers use)?"""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = key.curve.key_size
            algo = hashes.SHA256() if size <= 256 else hashes.SHA384() if size <= 384 else hashes.SHA512()
            candidates = [signature]
            n = (size + 7) // 8
            if len(signature) == 2 * n:  # raw r||s (JWS style) rather than DER
                r, s = int.from_bytes(signature[:n], "big"), int.from_bytes(signature[n:], "big")
                candidates.append(encode_dss_signature(r, s))
            for sig in candidates:
                try:
                    key.verify(sig, data, ec.ECDSA(algo))
                    return True
                except (InvalidSignature, ValueError):
                    continue
            return False
        for pad in (padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), padding.PKCS1v15()):
            try:
                key.verify(signature, data, pad, hashes.SHA256())
                return True
            except InvalidSignature:
                continue
    except (InvalidSignature, ValueError):
        return False
    return False


def _issued_by_trusted(certs: list[x509.Certificate], keys: Iterable[TrustedKey]) -> str | None:
    """The trust-store entry that anchors a bundle's chain, if one does."""
    anchors = [k for k in keys if k.certificate is not None]
    for cert in certs:
        for anchor in anchors:
            assert anchor.certificate is not None
            if cert == anchor.certificate:
                return anchor.name
            try:
                cert.verify_directly_issued_by(anchor.certificate)
                return anchor.name
            except (InvalidSignature, ValueError, TypeError):
                continue
    return None


def verify(env: Envelope, keys: list[TrustedKey], trust_store_configured: bool) -> tuple[bool | None, str]:
    """The verdict on an envelope's signatures and a one-line detail (which key, or why not)."""
    if not env.signatures:
        return None, "the envelope carries no signature"
    data = pae(env.payload_type, env.payload)
    keyids = ", ".join(repr(k) for k, _ in env.signatures if k) or "none given"
    if env.certificates:
        leaf = env.certificates[0]
        key = _usable(leaf.public_key())
        subject = leaf.subject.rfc4514_string() or "(empty subject)"
        if key is None or not any(_check(key, sig, data) for _, sig in env.signatures):
            return False, f"the signature does not verify with the bundle's certificate {subject}"
        anchor = _issued_by_trusted(env.certificates, keys)
        if anchor is None:
            return False, f"signed by certificate {subject}, which no certificate in the trust store issued"
        return True, f"signed by certificate {subject}, trusted through {anchor}"
    if not trust_store_configured:
        return False, f"no trust store is configured (signing.trust_store); signature key ids: {keyids}"
    if not keys:
        return False, f"the trust store holds no keys or certificates; signature key ids: {keyids}"
    for keyid, sig in env.signatures:
        ordered = sorted(keys, key=lambda k: not k.matches(keyid))
        for k in ordered:
            if _check(k.key, sig, data):
                return True, f"signed by trusted key {k.name} (sha256:{k.fingerprint[:16]})"
    return False, f"no signature verifies with the {len(keys)} trusted key(s); signature key ids: {keyids}"
