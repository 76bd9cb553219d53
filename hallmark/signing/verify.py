"""Signature verification under a trust policy, in the Notary Project check order.

integrity -> authenticity -> authentic timestamp -> expiry -> revocation. Each check is enforced,
logged or skipped as the policy's level (and overrides) say; an enforced failure stops verification.
The clock is injected (``now``) so expired test certificates can be verified at a fixed time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from hallmark.signing.algorithms import UnsupportedKey, verify_raw
from hallmark.signing.certs import ChainError, TrustStore, describe, validate_chain
from hallmark.signing.envelope import (
    SCHEME_SIGNING_AUTHORITY,
    SCHEME_X509,
    SignerInfo,
    parse_envelope,
    parse_payload,
    rfc1123,
    unknown_critical,
)
from hallmark.signing.errors import EnvelopeError, VerificationError
from hallmark.signing.layout import Descriptor
from hallmark.signing.policy import ENFORCE, LOG, SKIP, TrustPolicy
from hallmark.signing.timestamp import TimestampError, verify_token


@dataclass
class CheckResult:
    check: str
    action: str  # enforce / log / skip
    ok: bool
    message: str = ""


@dataclass
class SignatureVerification:
    """The outcome for one signature envelope."""

    policy: str
    level: str
    checks: list[CheckResult] = field(default_factory=list)
    signer_info: SignerInfo | None = None
    signature_manifest: str | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None

    @property
    def warnings(self) -> list[str]:
        return [f"{c.check} was set to {c.action}: {c.message}" for c in self.checks if not c.ok and c.action == LOG]


def _integrity(env: bytes, media_type: str, subject: Descriptor | None) -> SignerInfo:
    try:
        info = parse_envelope(env, media_type)
    except EnvelopeError as exc:
        raise VerificationError("integrity", f"signature envelope is malformed: {exc}") from exc
    unknown = unknown_critical(info)
    if unknown:
        raise VerificationError(
            "integrity", f"signature envelope has unsupported critical headers: {', '.join(unknown)}"
        )
    leaf = info.certificate_chain[0]
    try:
        verify_raw(leaf.public_key(), info.algorithm, info.signed_bytes, info.signature)
    except UnsupportedKey as exc:
        raise VerificationError("integrity", str(exc)) from exc
    except InvalidSignature as exc:
        raise VerificationError(
            "integrity",
            "signature is invalid: it does not verify with the signing certificate",
        ) from exc
    try:
        target, _ = parse_payload(info.payload)
    except EnvelopeError as exc:
        raise VerificationError("integrity", str(exc)) from exc
    if subject is not None and (
        target.digest != subject.digest or target.size != subject.size or target.media_type != subject.media_type
    ):
        raise VerificationError(
            "integrity",
            f"payload targetArtifact {target.media_type} {target.digest} ({target.size} bytes) does not match "
            f"the artifact {subject.media_type} {subject.digest} ({subject.size} bytes)",
        )
    return info


def _authenticity(info: SignerInfo, policy: TrustPolicy, anchors: list[x509.Certificate]) -> None:
    try:
        validate_chain(info.certificate_chain)
    except ChainError as exc:
        raise VerificationError("authenticity", str(exc)) from exc
    if not any(cert in anchors for cert in info.certificate_chain):
        raise VerificationError(
            "authenticity", "the signature's certificate chain does not contain any trusted certificate"
        )
    if not policy.identity_matches(info.certificate_chain[0]):
        raise VerificationError(
            "authenticity",
            f"signing certificate from the digital signature does not match the X.509 trusted identities "
            f'{policy.trusted_identities} defined in the trust policy "{policy.name}"',
        )


def _valid_at(chain: list[x509.Certificate], when: dt.datetime) -> None:
    for cert in chain:
        if when < cert.not_valid_before_utc:
            raise VerificationError(
                "authenticTimestamp",
                f'verification time is before certificate "{describe(cert)}" validity period, '
                f'it will be valid from "{rfc1123(cert.not_valid_before_utc)}"',
            )
        if when > cert.not_valid_after_utc:
            raise VerificationError(
                "authenticTimestamp",
                f'verification time is after certificate "{describe(cert)}" validity period, '
                f'it was expired at "{rfc1123(cert.not_valid_after_utc)}"',
            )


def _authentic_timestamp(
    info: SignerInfo, policy: TrustPolicy, tsa_anchors: list[x509.Certificate] | None, now: dt.datetime
) -> str:
    chain = info.certificate_chain
    if info.signing_scheme == SCHEME_SIGNING_AUTHORITY:
        assert info.authentic_signing_time is not None
        t = info.authentic_signing_time
        for cert in chain:
            if not (cert.not_valid_before_utc <= t <= cert.not_valid_after_utc):
                raise VerificationError(
                    "authenticTimestamp",
                    f'authentic signing time "{rfc1123(t)}" is outside certificate "{describe(cert)}" validity period',
                )
        return "authentic signing time is within the certificate validity period"
    perform = tsa_anchors is not None
    if perform and policy.verify_timestamp == "afterCertExpiry":
        perform = any(now > c.not_valid_after_utc for c in chain)
    if not perform:
        _valid_at(chain, now)
        return "certificate chain is valid at verification time"
    assert tsa_anchors is not None
    if info.timestamp_token is None:
        raise VerificationError(
            "authenticTimestamp", "no timestamp countersignature was found in the signature envelope"
        )
    try:
        ts = verify_token(info.timestamp_token, info.signature, tsa_anchors)
    except TimestampError as exc:
        raise VerificationError("authenticTimestamp", str(exc)) from exc
    for cert in chain:
        if ts.earliest < cert.not_valid_before_utc:
            raise VerificationError(
                "authenticTimestamp",
                f'timestamp can be before certificate "{describe(cert)}" validity period, '
                f'it will be valid from "{rfc1123(cert.not_valid_before_utc)}"',
            )
        if ts.latest > cert.not_valid_after_utc:
            raise VerificationError(
                "authenticTimestamp",
                f'timestamp can be after certificate "{describe(cert)}" validity period, '
                f'it was expired at "{rfc1123(cert.not_valid_after_utc)}"',
            )
    return f"timestamp [{ts.earliest.isoformat()}, {ts.latest.isoformat()}] is within the certificate validity"


def _revocation(info: SignerInfo) -> str:
    for cert in info.certificate_chain:
        for cls in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
            try:
                cert.extensions.get_extension_for_class(cls)
            except x509.ExtensionNotFound:
                continue
            raise VerificationError(
                "revocation",
                f'revocation status of certificate "{describe(cert)}" is unknown: '
                "online OCSP/CRL checking is not implemented",
            )
    return "no certificate in the chain names a revocation service"


def verify_envelope(
    envelope: bytes,
    media_type: str,
    subject: Descriptor | None,
    policy: TrustPolicy,
    trust_store: TrustStore | None,
    now: dt.datetime,
) -> SignatureVerification:
    """Verify one envelope against one trust policy statement at time ``now``.

    Raises ``PolicyError`` when the policy names a trust store that cannot be loaded.
    """
    result = SignatureVerification(policy.name, policy.level)
    if policy.level == "skip":
        result.checks.append(CheckResult("integrity", SKIP, True, "configured to skip signature verification"))
        return result
    anchors: list[x509.Certificate] = []
    tsa: list[x509.Certificate] | None = None
    if trust_store is not None:
        for stype, name in policy.trust_stores:
            certs = trust_store.certificates(stype, name)
            if stype == "tsa":
                tsa = (tsa or []) + certs
    info: SignerInfo | None = None

    def run(check: str, fn: object) -> bool:
        action = policy.actions[check]
        if action == SKIP:
            result.checks.append(CheckResult(check, SKIP, True, "skipped by policy"))
            return True
        try:
            message = fn()  # type: ignore[operator]
        except VerificationError as exc:
            result.checks.append(CheckResult(check, action, False, exc.reason))
            if action == ENFORCE:
                result.error = f"{check} validation failed: {exc.reason}"
                return False
            return True
        result.checks.append(CheckResult(check, action, True, message or "passed"))
        return True

    def integrity() -> str:
        nonlocal info
        info = _integrity(envelope, media_type, subject)
        result.signer_info = info
        return "signature verifies with the signing certificate and matches the artifact"

    if not run("integrity", integrity) or info is None:
        return result
    inf: SignerInfo = info
    if trust_store is not None:
        store_type = "signingAuthority" if inf.signing_scheme == SCHEME_SIGNING_AUTHORITY else "ca"
        for name in policy.stores(store_type):
            anchors.extend(trust_store.certificates(store_type, name))

    def authenticity() -> str:
        _authenticity(inf, policy, anchors)
        return "certificate chain is trusted and the identity matches"

    def expiry() -> str:
        if inf.expiry is not None and now > inf.expiry:
            raise VerificationError("expiry", f'digital signature has expired on "{rfc1123(inf.expiry)}"')
        return "signature has not expired"

    steps = (
        ("authenticity", authenticity),
        ("authenticTimestamp", lambda: _authentic_timestamp(inf, policy, tsa, now)),
        ("expiry", expiry),
        ("revocation", lambda: _revocation(inf)),
    )
    for check, fn in steps:
        if not run(check, fn):
            return result
    return result


__all__ = ["LOG", "SCHEME_X509", "CheckResult", "SignatureVerification", "verify_envelope"]
