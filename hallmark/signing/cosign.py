"""Sigstore cosign key-based "simple signing" signatures (the ``sha256-<digest>.sig`` tag format).

The payload is verified with ``cryptography`` (ECDSA over SHA-256 of the payload bytes) and must name
the manifest digest being checked; cosign ignores ``critical.identity.docker-reference`` and so do we.
Keyless (Fulcio/Rekor) bundles are out of scope here.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
_WRAPPER_PREFIX = b"\x00sigstore-json\n"


class CosignError(ValueError):
    """A cosign signature is malformed, does not verify, or names another image."""


@dataclass
class CosignSignature:
    media_type: str
    payload: bytes
    signature_b64: str


def load_containers_image_signature(data: bytes) -> CosignSignature:
    """Read containers/image's on-disk wrapper (``\\x00sigstore-json\\n`` + JSON)."""
    if not data.startswith(_WRAPPER_PREFIX):
        raise CosignError("not a sigstore signature file (missing \\x00sigstore-json header)")
    try:
        doc = json.loads(data[len(_WRAPPER_PREFIX) :])
        payload = base64.b64decode(doc["payload"], validate=True)
        annotations = doc.get("annotations") or {}
        return CosignSignature(doc["mimeType"], payload, annotations.get(SIGNATURE_ANNOTATION, ""))
    except (ValueError, KeyError, TypeError) as exc:
        raise CosignError(f"malformed sigstore signature file: {exc}") from exc


def from_layer(layer: dict[str, Any], blob: bytes) -> CosignSignature:
    """Build from a ``.sig`` manifest layer descriptor and its blob (the payload)."""
    annotations = layer.get("annotations") or {}
    return CosignSignature(str(layer.get("mediaType")), blob, str(annotations.get(SIGNATURE_ANNOTATION, "")))


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise CosignError(f"RSA public key of {key.key_size} bits is too weak (minimum 2048)")
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CosignError(f"public key type {type(key).__name__} is not supported")
    return key


def verify_simple_signing(
    sig: CosignSignature, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, manifest_digest: str
) -> dict[str, Any]:
    """Verify signature and digest binding; return the decoded payload."""
    if sig.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
        raise CosignError(f"media type {sig.media_type!r} is not a cosign simple-signing signature")
    if not sig.signature_b64:
        raise CosignError(f"layer lacks the {SIGNATURE_ANNOTATION} annotation")
    try:
        raw = base64.b64decode(sig.signature_b64, validate=True)
    except ValueError as exc:
        raise CosignError(f"signature is not valid base64: {exc}") from exc
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(raw, sig.payload, ec.ECDSA(hashes.SHA256()))
        else:
            public_key.verify(raw, sig.payload, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise CosignError("cosign signature does not verify with the given public key") from exc
    try:
        doc = json.loads(sig.payload)
        critical = doc["critical"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        sig_type = critical["type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CosignError(f"simple-signing payload is malformed: {exc}") from exc
    if sig_type != "cosign container image signature":
        raise CosignError(f"simple-signing payload type {sig_type!r} is not a cosign image signature")
    if signed_digest != manifest_digest:
        raise CosignError(f"signed digest {signed_digest} does not match the manifest digest {manifest_digest}")
    return dict(doc)


def cosign_tag(manifest_digest: str) -> str:
    """The tag cosign stores signatures under: ``sha256-<hex>.sig``."""
    return manifest_digest.replace(":", "-") + ".sig"


@dataclass
class CosignVerification:
    """One layer of a ``.sig`` manifest: verified with the given key, or why not."""

    signature_manifest: str
    passed: bool
    error: str | None = None
    payload: dict[str, Any] | None = None


def verify_cosign_signatures(
    source: Any, manifest_digest: str, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
) -> list[CosignVerification]:
    """Find the ``sha256-<hex>.sig`` tag next to an image (registry or layout) and verify each layer.

    ``source`` is an ``ArtifactSource``; an absent tag gives an empty list (the image is not
    cosign-signed), unreadable content gives failed results rather than exceptions.
    """
    from hallmark.signing.layout import LayoutError

    try:
        desc = source.resolve(cosign_tag(manifest_digest))
    except LayoutError:
        return []
    try:
        manifest = json.loads(source.fetch_manifest(desc.digest))
        layers = manifest.get("layers") if isinstance(manifest, dict) else None
    except (ValueError, LayoutError) as exc:
        return [CosignVerification(desc.digest, False, f"cannot read cosign signature manifest: {exc}")]
    out: list[CosignVerification] = []
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        try:
            blob = source.fetch_blob(str(layer.get("digest")))
            doc = verify_simple_signing(from_layer(layer, blob), public_key, manifest_digest)
        except (CosignError, LayoutError) as exc:
            out.append(CosignVerification(desc.digest, False, str(exc)))
            continue
        out.append(CosignVerification(desc.digest, True, None, doc))
    if not out:
        out.append(CosignVerification(desc.digest, False, "cosign signature manifest has no simple-signing layer"))
    return out
