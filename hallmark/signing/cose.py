"""COSE_Sign1 envelope (RFC 9052) for Notary signatures.

CBOR encoding and decoding is done by ``cbor2``; the COSE structure is assembled by hand because the
Notary headers need exact control that COSE libraries (pycose) do not give: RFC 8949 deterministic key
order, string-labelled headers, and tag-1 epoch times, which the conformance vector fixes byte for byte.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from hallmark.signing.algorithms import BY_COSE_ID
from hallmark.signing.envelope import (
    COSE_MEDIA_TYPE,
    H_AUTHENTIC_SIGNING_TIME,
    H_EXPIRY,
    H_SCHEME,
    H_SIGNING_AGENT,
    H_SIGNING_TIME,
    H_TIMESTAMP,
    SCHEME_SIGNING_AUTHORITY,
    SignerInfo,
    SignRequest,
    check_signed_attributes,
)
from hallmark.signing.errors import EnvelopeError
from hallmark.signing.keys import Signer

COSE_SIGN1_TAG = 18
LABEL_ALG, LABEL_CRIT, LABEL_CTY, LABEL_X5CHAIN = 1, 2, 3, 33
_RESERVED = {H_SCHEME, H_SIGNING_TIME, H_AUTHENTIC_SIGNING_TIME, H_EXPIRY}


def _epoch(t: dt.datetime) -> cbor2.CBORTag:
    return cbor2.CBORTag(1, int(t.timestamp()))


def deterministic_map(items: dict[Any, Any]) -> dict[Any, Any]:
    """Order map entries by their encoded key bytes (RFC 8949 section 4.2.1)."""
    return dict(sorted(items.items(), key=lambda kv: cbor2.dumps(kv[0])))


def protected_header(request: SignRequest, alg_id: int) -> dict[Any, Any]:
    header: dict[Any, Any] = {
        LABEL_ALG: alg_id,
        LABEL_CTY: request.payload_content_type,
        H_SCHEME: request.signing_scheme,
    }
    crit: list[str] = [H_SCHEME]
    if request.signing_scheme == SCHEME_SIGNING_AUTHORITY:
        header[H_AUTHENTIC_SIGNING_TIME] = _epoch(request.signing_time)
        crit.append(H_AUTHENTIC_SIGNING_TIME)
    else:
        header[H_SIGNING_TIME] = _epoch(request.signing_time)
    if request.expiry is not None:
        header[H_EXPIRY] = _epoch(request.expiry)
        crit.append(H_EXPIRY)
    crit.extend(request.critical_extended)
    for key, value in request.extended_attributes.items():
        if key in _RESERVED:
            raise EnvelopeError(f"extended attribute {key!r} collides with a reserved header")
        header[key] = value
    header[LABEL_CRIT] = crit
    return deterministic_map(header)


def encode_sign1(protected: bytes, unprotected: dict[Any, Any], payload: bytes, signature: bytes) -> bytes:
    """Encode ``COSE_Sign1_Tagged`` with a deterministic unprotected map."""
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, deterministic_map(unprotected), payload, signature]))


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The ``Sig_structure`` for COSE_Sign1 with empty external AAD."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign(request: SignRequest, signer: Signer, timestamp_token: bytes | None = None) -> bytes:
    """Return the COSE envelope bytes (``application/cose``)."""
    protected = cbor2.dumps(protected_header(request, signer.algorithm.cose_id))
    signature = signer.sign(sig_structure(protected, request.payload))
    unprotected: dict[Any, Any] = {
        LABEL_X5CHAIN: [c.public_bytes(Encoding.DER) for c in signer.certificate_chain],
        H_SIGNING_AGENT: request.signing_agent,
    }
    if timestamp_token is not None:
        unprotected[H_TIMESTAMP] = timestamp_token
    return encode_sign1(protected, unprotected, request.payload, signature)


def _time(value: Any, name: str) -> dt.datetime:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value
    raise EnvelopeError(f"{name} must be a tag-1 epoch time, got {type(value).__name__}")


def parse(data: bytes) -> SignerInfo:
    """Decode a COSE_Sign1_Tagged envelope and check its structure (not its signature)."""
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise EnvelopeError(f"COSE envelope is not valid CBOR: {exc}") from exc
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise EnvelopeError("COSE envelope is not a tagged COSE_Sign1 message")
    value = obj.value
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise EnvelopeError("COSE_Sign1 must be an array of four items")
    protected_raw, unprotected, payload, signature = value
    if not isinstance(protected_raw, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise EnvelopeError("COSE_Sign1 protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, Mapping):
        raise EnvelopeError("COSE_Sign1 unprotected header must be a map")
    try:
        header = cbor2.loads(protected_raw)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise EnvelopeError(f"COSE protected header is not valid CBOR: {exc}") from exc
    if not isinstance(header, Mapping):
        raise EnvelopeError("COSE protected header must be a map")
    alg_id = header.get(LABEL_ALG)
    if not isinstance(alg_id, int) or alg_id not in BY_COSE_ID:
        raise EnvelopeError(f"signature algorithm {alg_id!r} is not supported")
    crit = header.get(LABEL_CRIT)
    if not isinstance(crit, list | tuple) or not crit or not all(isinstance(c, str | int) for c in crit):
        raise EnvelopeError("crit header must be a non-empty list of header labels")
    for name in crit:
        if name not in header:
            raise EnvelopeError(f"critical header {name!r} is not present in the protected header")
    cty = header.get(LABEL_CTY)
    if not isinstance(cty, str):
        raise EnvelopeError("content type header (3) is missing or not a string")
    scheme = header.get(H_SCHEME)
    if not isinstance(scheme, str):
        raise EnvelopeError(f"{H_SCHEME} header is missing")
    x5chain = unprotected.get(LABEL_X5CHAIN)
    if isinstance(x5chain, bytes):
        x5chain = [x5chain]
    if not isinstance(x5chain, list | tuple) or not x5chain:
        raise EnvelopeError("x5chain header (33) with the certificate chain is missing")
    chain = []
    for i, der in enumerate(x5chain):
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except (ValueError, TypeError) as exc:
            raise EnvelopeError(f"x5chain[{i}] is not a DER certificate: {exc}") from exc
    token = unprotected.get(H_TIMESTAMP)
    if token is not None and not isinstance(token, bytes):
        raise EnvelopeError(f"{H_TIMESTAMP} must be a byte string")
    agent = unprotected.get(H_SIGNING_AGENT)
    info = SignerInfo(
        envelope_media_type=COSE_MEDIA_TYPE,
        payload=payload,
        payload_content_type=cty,
        algorithm=BY_COSE_ID[alg_id],
        signing_scheme=scheme,
        signing_time=_time(header[H_SIGNING_TIME], H_SIGNING_TIME) if H_SIGNING_TIME in header else None,
        authentic_signing_time=(
            _time(header[H_AUTHENTIC_SIGNING_TIME], H_AUTHENTIC_SIGNING_TIME)
            if H_AUTHENTIC_SIGNING_TIME in header
            else None
        ),
        expiry=_time(header[H_EXPIRY], H_EXPIRY) if H_EXPIRY in header else None,
        critical=tuple(str(c) for c in crit),
        extended_attributes={k: v for k, v in header.items() if isinstance(k, str) and k not in _RESERVED},
        certificate_chain=chain,
        signature=signature,
        signed_bytes=sig_structure(protected_raw, payload),
        signing_agent=agent if isinstance(agent, str) else None,
        timestamp_token=token,
    )
    check_signed_attributes(info)
    return info
