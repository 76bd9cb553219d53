"""JWS JSON serialization (flattened) envelope for Notary signatures.

Hand-written rather than using a JOSE library because the Notary rules go beyond RFC 7515 and the
libraries get them wrong for this use: PyJWT only does compact JWTs, and jwcrypto accepts padded
base64url (the ``ca_invalid_sig_env`` vector must fail). The cryptography is done by ``cryptography``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from hallmark.signing.algorithms import ALGORITHMS
from hallmark.signing.b64 import Base64Error, b64std_decode_strict, b64url_decode_strict, b64url_encode
from hallmark.signing.envelope import (
    H_AUTHENTIC_SIGNING_TIME,
    H_EXPIRY,
    H_SCHEME,
    H_SIGNING_AGENT,
    H_SIGNING_TIME,
    H_TIMESTAMP,
    JWS_MEDIA_TYPE,
    SCHEME_SIGNING_AUTHORITY,
    SignerInfo,
    SignRequest,
    check_signed_attributes,
    format_time,
)
from hallmark.signing.errors import EnvelopeError
from hallmark.signing.keys import Signer

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_TOP_LEVEL = {"payload", "protected", "header", "signature"}
_RESERVED = {"alg", "cty", "crit", H_SCHEME, H_SIGNING_TIME, H_AUTHENTIC_SIGNING_TIME, H_EXPIRY}


def protected_header(request: SignRequest, alg: str) -> dict[str, Any]:
    """The protected header in the shape the conformance vector shows."""
    header: dict[str, Any] = {"alg": alg, "cty": request.payload_content_type, H_SCHEME: request.signing_scheme}
    crit = [H_SCHEME, *request.critical_extended]
    if request.signing_scheme == SCHEME_SIGNING_AUTHORITY:
        header[H_AUTHENTIC_SIGNING_TIME] = format_time(request.signing_time)
        crit.append(H_AUTHENTIC_SIGNING_TIME)
    else:
        header[H_SIGNING_TIME] = format_time(request.signing_time)
    if request.expiry is not None:
        header[H_EXPIRY] = format_time(request.expiry)
        crit.append(H_EXPIRY)
    for key, value in request.extended_attributes.items():
        if key in _RESERVED:
            raise EnvelopeError(f"extended attribute {key!r} collides with a reserved header")
        header[key] = value
    header["crit"] = crit
    return header


def encode_protected(header: dict[str, Any]) -> str:
    """Compact JSON with sorted keys, base64url without padding."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return b64url_encode(raw)


def sign(request: SignRequest, signer: Signer, timestamp_token: bytes | None = None) -> bytes:
    """Return the JWS envelope bytes (``application/jose+json``)."""
    protected = encode_protected(protected_header(request, signer.algorithm.name))
    payload = b64url_encode(request.payload)
    signature = signer.sign(f"{protected}.{payload}".encode("ascii"))
    unprotected: dict[str, Any] = {
        "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in signer.certificate_chain],
        H_SIGNING_AGENT: request.signing_agent,
    }
    if timestamp_token is not None:
        unprotected[H_TIMESTAMP] = base64.b64encode(timestamp_token).decode()
    env = {"payload": payload, "protected": protected, "header": unprotected, "signature": b64url_encode(signature)}
    return json.dumps(env, separators=(",", ":")).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise EnvelopeError(f"duplicate JSON member {key!r}")
        out[key] = value
    return out


def _loads(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except EnvelopeError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"{what} is not valid JSON: {exc}") from exc


def parse_time(value: Any, name: str) -> dt.datetime:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise EnvelopeError(f"{name} is not an RFC 3339 time: {value!r}")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"{what} is not a string")
    try:
        return b64url_decode_strict(text)
    except Base64Error as exc:
        raise EnvelopeError(f"{what}: {exc}") from exc


def parse(data: bytes) -> SignerInfo:
    """Decode a flattened JWS envelope and check its structure (not its signature)."""
    env = _loads(data, "JWS envelope")
    if not isinstance(env, dict):
        raise EnvelopeError("JWS envelope is not a JSON object")
    if "signatures" in env:
        raise EnvelopeError("JWS general serialization is not supported; use the flattened form")
    missing = sorted(_TOP_LEVEL - {"header"} - env.keys())
    if missing:
        raise EnvelopeError(f"JWS envelope lacks {', '.join(missing)}")
    extra = sorted(env.keys() - _TOP_LEVEL)
    if extra:
        raise EnvelopeError(f"JWS envelope has unexpected members {', '.join(extra)}")
    payload = _decode(env["payload"], "payload")
    protected_raw = _decode(env["protected"], "protected header")
    signature = _decode(env["signature"], "signature")
    header = _loads(protected_raw, "protected header")
    if not isinstance(header, dict):
        raise EnvelopeError("protected header is not a JSON object")
    unprotected = env.get("header") or {}
    if not isinstance(unprotected, dict):
        raise EnvelopeError("unprotected header is not a JSON object")

    alg_name = header.get("alg")
    if alg_name not in ALGORITHMS:
        raise EnvelopeError(f"signature algorithm {alg_name!r} is not supported")
    crit = header.get("crit")
    if not isinstance(crit, list) or not crit or not all(isinstance(c, str) for c in crit):
        raise EnvelopeError("crit header must be a non-empty list of header names")
    for name in crit:
        if name not in header:
            raise EnvelopeError(f"critical header {name!r} is not present in the protected header")
    cty = header.get("cty")
    if not isinstance(cty, str):
        raise EnvelopeError("cty header is missing")
    scheme = header.get(H_SCHEME)
    if not isinstance(scheme, str):
        raise EnvelopeError(f"{H_SCHEME} header is missing")
    signing_time = parse_time(header[H_SIGNING_TIME], H_SIGNING_TIME) if H_SIGNING_TIME in header else None
    authentic = (
        parse_time(header[H_AUTHENTIC_SIGNING_TIME], H_AUTHENTIC_SIGNING_TIME)
        if H_AUTHENTIC_SIGNING_TIME in header
        else None
    )
    expiry = parse_time(header[H_EXPIRY], H_EXPIRY) if H_EXPIRY in header else None

    x5c = unprotected.get("x5c")
    if not isinstance(x5c, list) or not x5c:
        raise EnvelopeError("x5c header with the certificate chain is missing")
    chain = []
    for i, item in enumerate(x5c):
        try:
            chain.append(x509.load_der_x509_certificate(b64std_decode_strict(item)))
        except (Base64Error, ValueError, TypeError) as exc:
            raise EnvelopeError(f"x5c[{i}] is not a DER certificate: {exc}") from exc
    token = None
    if H_TIMESTAMP in unprotected:
        try:
            token = b64std_decode_strict(unprotected[H_TIMESTAMP])
        except (Base64Error, TypeError) as exc:
            raise EnvelopeError(f"{H_TIMESTAMP} is not valid base64: {exc}") from exc
    agent = unprotected.get(H_SIGNING_AGENT)
    info = SignerInfo(
        envelope_media_type=JWS_MEDIA_TYPE,
        payload=payload,
        payload_content_type=cty,
        algorithm=ALGORITHMS[alg_name],
        signing_scheme=scheme,
        signing_time=signing_time,
        authentic_signing_time=authentic,
        expiry=expiry,
        critical=tuple(crit),
        extended_attributes={k: v for k, v in header.items() if k not in _RESERVED},
        certificate_chain=chain,
        signature=signature,
        signed_bytes=f"{env['protected']}.{env['payload']}".encode("ascii"),
        signing_agent=agent if isinstance(agent, str) else None,
        timestamp_token=token,
    )
    check_signed_attributes(info)
    return info
