"""Envelope-independent parts of a Notary signature: the payload, signed attributes and parse results.

``parse_envelope`` dispatches on the media type to the JWS or COSE codec; both return ``SignerInfo``
so the verifier never needs to know which envelope carried the signature.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from hallmark.signing.algorithms import Algorithm
from hallmark.signing.errors import EnvelopeError
from hallmark.signing.layout import Descriptor

PAYLOAD_MEDIA_TYPE = "application/vnd.cncf.notary.payload.v1+json"
JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
ENVELOPE_MEDIA_TYPES = (JWS_MEDIA_TYPE, COSE_MEDIA_TYPE)

SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"
SIGNING_SCHEMES = (SCHEME_X509, SCHEME_SIGNING_AUTHORITY)

H_SCHEME = "io.cncf.notary.signingScheme"
H_SIGNING_TIME = "io.cncf.notary.signingTime"
H_AUTHENTIC_SIGNING_TIME = "io.cncf.notary.authenticSigningTime"
H_EXPIRY = "io.cncf.notary.expiry"
H_SIGNING_AGENT = "io.cncf.notary.signingAgent"
H_TIMESTAMP = "io.cncf.notary.timestampSignature"
H_PLUGIN = "io.cncf.notary.verificationPlugin"
H_PLUGIN_MIN_VERSION = "io.cncf.notary.verificationPluginMinVersion"
# Critical headers this verifier understands; any other name in ``crit`` fails verification.
KNOWN_CRITICAL = frozenset({H_SCHEME, H_AUTHENTIC_SIGNING_TIME, H_EXPIRY})
DEFAULT_SIGNING_AGENT = "Hallmark/0.1.0"


@dataclass
class SignRequest:
    """What to sign and the signed attributes to include."""

    payload: bytes
    signing_time: dt.datetime
    expiry: dt.datetime | None = None
    signing_scheme: str = SCHEME_X509
    signing_agent: str = DEFAULT_SIGNING_AGENT
    extended_attributes: dict[str, Any] = field(default_factory=dict)
    critical_extended: tuple[str, ...] = ()
    payload_content_type: str = PAYLOAD_MEDIA_TYPE


@dataclass
class SignerInfo:
    """Everything a verifier needs from an envelope, already decoded and structurally checked."""

    envelope_media_type: str
    payload: bytes
    payload_content_type: str
    algorithm: Algorithm
    signing_scheme: str
    signing_time: dt.datetime | None
    authentic_signing_time: dt.datetime | None
    expiry: dt.datetime | None
    critical: tuple[str, ...]
    extended_attributes: dict[str, Any]
    certificate_chain: list[x509.Certificate]
    signature: bytes
    signed_bytes: bytes
    signing_agent: str | None = None
    timestamp_token: bytes | None = None

    @property
    def signer_time(self) -> dt.datetime | None:
        return self.authentic_signing_time or self.signing_time


def build_payload(target: Descriptor, annotations: dict[str, str] | None = None) -> bytes:
    """The ``application/vnd.cncf.notary.payload.v1+json`` document for a target descriptor.

    Keys are emitted in the order notation uses (mediaType, digest, size, annotations).
    """
    desc: dict[str, Any] = {"mediaType": target.media_type, "digest": target.digest, "size": target.size}
    if annotations:
        desc["annotations"] = dict(annotations)
    return json.dumps({"targetArtifact": desc}, separators=(",", ":")).encode()


def parse_payload(payload: bytes) -> tuple[Descriptor, dict[str, str]]:
    """Return the target descriptor and its annotations from a Notary payload."""
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise EnvelopeError(f"payload is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("targetArtifact"), dict):
        raise EnvelopeError("payload has no targetArtifact descriptor")
    target = doc["targetArtifact"]
    try:
        desc = Descriptor.from_json(target)
    except ValueError as exc:
        raise EnvelopeError(f"payload targetArtifact is invalid: {exc}") from exc
    return desc, dict(desc.annotations)


def format_time(t: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` and whole seconds, as in the conformance vectors."""
    return t.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc1123(t: dt.datetime) -> str:
    """Go's ``time.RFC1123Z`` rendering, used in notation's error messages."""
    return t.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def check_signed_attributes(info: SignerInfo) -> None:
    """Rules shared by JWS and COSE: scheme, required times, and the critical header list."""
    if info.payload_content_type != PAYLOAD_MEDIA_TYPE:
        raise EnvelopeError(f"payload content type {info.payload_content_type!r} is not supported")
    if info.signing_scheme not in SIGNING_SCHEMES:
        raise EnvelopeError(f"signing scheme {info.signing_scheme!r} is not supported")
    crit = info.critical
    if len(set(crit)) != len(crit):
        raise EnvelopeError("crit header lists a header more than once")
    if H_SCHEME not in crit:
        raise EnvelopeError(f"{H_SCHEME} must be marked critical")
    if info.expiry is not None and H_EXPIRY not in crit:
        raise EnvelopeError(f"{H_EXPIRY} must be marked critical")
    if info.signing_scheme == SCHEME_X509:
        if info.signing_time is None:
            raise EnvelopeError(f"{H_SIGNING_TIME} is required for signing scheme {SCHEME_X509}")
        if info.authentic_signing_time is not None:
            raise EnvelopeError(f"{H_AUTHENTIC_SIGNING_TIME} is not allowed for signing scheme {SCHEME_X509}")
    else:
        if info.authentic_signing_time is None:
            raise EnvelopeError(f"{H_AUTHENTIC_SIGNING_TIME} is required for {SCHEME_SIGNING_AUTHORITY}")
        if H_AUTHENTIC_SIGNING_TIME not in crit:
            raise EnvelopeError(f"{H_AUTHENTIC_SIGNING_TIME} must be marked critical")
    if not info.certificate_chain:
        raise EnvelopeError("the envelope carries no certificate chain")


def unknown_critical(info: SignerInfo) -> list[str]:
    """Critical headers this verifier does not understand (the spec requires failing on them)."""
    return [name for name in info.critical if name not in KNOWN_CRITICAL]


def parse_envelope(data: bytes, media_type: str) -> SignerInfo:
    """Parse and structurally validate an envelope of either supported media type."""
    if media_type == JWS_MEDIA_TYPE:
        from hallmark.signing import jws

        return jws.parse(data)
    if media_type == COSE_MEDIA_TYPE:
        from hallmark.signing import cose

        return cose.parse(data)
    raise EnvelopeError(f"signature envelope media type {media_type!r} is not supported")


def sign_envelope(request: SignRequest, signer: Any, media_type: str) -> bytes:
    """Produce an envelope of ``media_type`` (JWS or COSE) with ``signer``."""
    if media_type in (JWS_MEDIA_TYPE, "jws"):
        from hallmark.signing import jws

        return jws.sign(request, signer)
    if media_type in (COSE_MEDIA_TYPE, "cose"):
        from hallmark.signing import cose

        return cose.sign(request, signer)
    raise EnvelopeError(f"signature envelope media type {media_type!r} is not supported")


def envelope_media_type(name: str) -> str:
    """Map ``jws``/``cose`` (CLI names) or a media type to the envelope media type."""
    mapping = {"jws": JWS_MEDIA_TYPE, "cose": COSE_MEDIA_TYPE}
    mt = mapping.get(name, name)
    if mt not in ENVELOPE_MEDIA_TYPES:
        raise EnvelopeError(f"envelope {name!r} is not supported (use jws or cose)")
    return mt
