"""RFC 3161 timestamp countersignatures: parse the token and verify it offline.

ASN.1 parsing uses ``asn1crypto`` and signature checks use ``cryptography``; the CMS SignedData
verification itself is written here because neither library verifies CMS signatures (cryptography's
PKCS#7 module only signs) and the RFC 3161 rules (message imprint over the Notary signature, signed
``contentType``/``messageDigest`` attributes, timeStamping EKU) are specific anyway.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms, core, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from hallmark.signing.certs import ChainError, check_key_strength, describe

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class TimestampError(ValueError):
    """The timestamp token is malformed, does not match the signature, or is not trusted."""


@dataclass
class Timestamp:
    """A verified (or merely parsed) timestamp: the generation time and its accuracy window."""

    gen_time: dt.datetime
    accuracy: dt.timedelta
    hash_name: str
    hashed_message: bytes
    token: cms.ContentInfo

    @property
    def earliest(self) -> dt.datetime:
        return self.gen_time - self.accuracy

    @property
    def latest(self) -> dt.datetime:
        return self.gen_time + self.accuracy

    def certificates(self) -> list[x509.Certificate]:
        certs = self.token["content"]["certificates"]
        out = []
        for choice in certs or []:
            if choice.name == "certificate":
                out.append(x509.load_der_x509_certificate(choice.chosen.dump()))
        return out


def parse_token(der: bytes) -> Timestamp:
    """Parse a TimeStampToken; errors read "failed to parse timestamp countersignature: ..."."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise TimestampError("content type is not signedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise TimestampError("encapsulated content is not TSTInfo")
        tst = encap["content"].parsed
        if not isinstance(tst, tsp.TSTInfo):
            raise TimestampError("encapsulated content is not TSTInfo")
        gen_time = tst["gen_time"].native
        acc = tst["accuracy"].native or {}
        accuracy = dt.timedelta(
            seconds=acc.get("seconds") or 0,
            milliseconds=acc.get("millis") or 0,
            microseconds=acc.get("micros") or 0,
        )
        imprint = tst["message_imprint"]
        hash_name = imprint["hash_algorithm"]["algorithm"].native
        hashed = imprint["hashed_message"].native
        len(signed["signer_infos"])  # force parsing of the lazily decoded parts
    except TimestampError as exc:
        raise TimestampError(f"failed to parse timestamp countersignature: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise TimestampError(f"failed to parse timestamp countersignature: cms: syntax error: {exc}") from exc
    if hash_name not in _HASHES:
        raise TimestampError(f"timestamp message imprint uses unsupported hash {hash_name!r}")
    return Timestamp(gen_time, accuracy, hash_name, hashed, info)


def _find_signer_cert(signer_info: cms.SignerInfo, certs: Sequence[x509.Certificate]) -> x509.Certificate:
    sid = signer_info["sid"]
    for cert in certs:
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            if ias["serial_number"].native == cert.serial_number and ias["issuer"].dump() == _name_der(cert.issuer):
                return cert
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if ski == sid.chosen.native:
                return cert
    raise TimestampError("timestamp signer certificate is not included in the token")


def _name_der(name: x509.Name) -> bytes:
    return name.public_bytes()


def _verify_signer_info(signer_info: cms.SignerInfo, content: bytes, cert: x509.Certificate) -> None:
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        raise TimestampError(f"timestamp signature uses unsupported digest {digest_name!r}")
    h = _HASHES[digest_name]()
    attrs = signer_info["signed_attrs"]
    if not attrs:
        raise TimestampError("timestamp token has no signed attributes")
    values = {a["type"].native: a["values"] for a in attrs}
    if values.get("content_type") is None or values["content_type"][0].native != "tst_info":
        raise TimestampError("timestamp signed attributes lack contentType tstInfo")
    expected = hashlib.new(digest_name, content).digest()
    if values.get("message_digest") is None or values["message_digest"][0].native != expected:
        raise TimestampError("timestamp messageDigest does not match the TSTInfo content")
    # The signature covers the attributes DER-encoded as a SET OF (tag 0x31), not the [0] IMPLICIT form.
    signed_bytes = b"\x31" + attrs.dump()[1:]
    signature = signer_info["signature"].native
    algo = signer_info["signature_algorithm"]
    key = cert.public_key()
    try:
        kind = algo.signature_algo
        if kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed_bytes, padding.PKCS1v15(), h)
        elif kind == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            params = algo["parameters"]
            pss_hash = _HASHES[params["hash_algorithm"]["algorithm"].native]()
            key.verify(
                signature,
                signed_bytes,
                padding.PSS(mgf=padding.MGF1(pss_hash), salt_length=params["salt_length"].native),
                pss_hash,
            )
        elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed_bytes, ec.ECDSA(h))
        else:
            raise TimestampError(f"timestamp signature algorithm {kind} does not match the TSA key")
    except InvalidSignature as exc:
        raise TimestampError("timestamp token signature is invalid") from exc


def _build_tsa_chain(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """Follow issuers from the TSA certificate until a trust anchor issues (or is) a certificate."""
    chain = [leaf]
    candidates = list(pool) + list(anchors)
    for _ in range(10):
        current = chain[-1]
        if current in anchors:
            return chain
        for anchor in anchors:
            if anchor.subject == current.issuer:
                try:
                    current.verify_directly_issued_by(anchor)
                except (InvalidSignature, ValueError, TypeError):
                    continue
                return [*chain, anchor]
        nxt = next((c for c in candidates if c.subject == current.issuer and c not in chain), None)
        if nxt is None:
            break
        try:
            current.verify_directly_issued_by(nxt)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise TimestampError(f"certificate {describe(current)!r} has an invalid issuer signature") from exc
        chain.append(nxt)
    raise TimestampError(
        "failed to verify the timestamp countersignature: cms verification failure: "
        "x509: certificate signed by unknown authority"
    )


def verify_token(der: bytes, signature: bytes, tsa_anchors: Sequence[x509.Certificate]) -> Timestamp:
    """Verify a timestamp over ``signature`` (the Notary signature bytes) against TSA roots."""
    ts = parse_token(der)
    if hashlib.new(ts.hash_name, signature).digest() != ts.hashed_message:
        raise TimestampError("timestamp message imprint does not match the signature")
    signed = ts.token["content"]
    signer_infos = signed["signer_infos"]
    if len(signer_infos) != 1:
        raise TimestampError("timestamp token must have exactly one signer")
    signer_info = signer_infos[0]
    certs = ts.certificates()
    signer_cert = _find_signer_cert(signer_info, certs)
    content = signed["encap_content_info"]["content"].contents
    _verify_signer_info(signer_info, content, signer_cert)
    chain = _build_tsa_chain(signer_cert, certs, tsa_anchors)
    try:
        for cert in chain:
            check_key_strength(cert)
    except ChainError as exc:
        raise TimestampError(str(exc)) from exc
    try:
        eku = signer_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise TimestampError("timestamp signing certificate lacks the timeStamping extended key usage") from exc
    if ExtendedKeyUsageOID.TIME_STAMPING not in list(eku):
        raise TimestampError("timestamp signing certificate lacks the timeStamping extended key usage")
    for cert in chain:
        if not (cert.not_valid_before_utc <= ts.gen_time <= cert.not_valid_after_utc):
            raise TimestampError(
                f"timestamp certificate {describe(cert)!r} was not valid at the timestamp time {ts.gen_time}"
            )
    return ts


_ = core  # asn1crypto.core is imported for its side effect of registering universal types
