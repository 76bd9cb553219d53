"""The OCI signature manifest that carries a Notary envelope, and the pure "sign a descriptor" step.

``build_signature`` does no I/O: it returns the manifest bytes and every blob so any registry client
(or the Hallmark registry itself) can push them through the referrers API.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from hallmark.digest import digest_bytes
from hallmark.signing.envelope import (
    ENVELOPE_MEDIA_TYPES,
    SignRequest,
    build_payload,
    envelope_media_type,
    sign_envelope,
)
from hallmark.signing.keys import Signer
from hallmark.signing.layout import MANIFEST_MEDIA_TYPE, Descriptor

SIGNATURE_ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
THUMBPRINT_ANNOTATION = "io.cncf.notary.x509chain.thumbprint#S256"
CREATED_ANNOTATION = "org.opencontainers.image.created"


@dataclass
class SignatureArtifact:
    """A ready-to-push signature: manifest bytes, its descriptor and the blobs it references."""

    manifest: bytes
    descriptor: Descriptor
    blobs: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, bytes)
    envelope: bytes = b""
    envelope_media_type: str = ""


def chain_thumbprints(chain: list[Any]) -> str:
    """The annotation value: a compact JSON list of SHA-256 hex digests of each DER certificate."""
    prints = [hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest() for c in chain]
    return json.dumps(prints, separators=(",", ":"))


def build_signature_manifest(
    subject: Descriptor, envelope: bytes, media_type: str, thumbprints: str, created: dt.datetime
) -> bytes:
    """OCI 1.1 image manifest with artifactType, empty config, one envelope layer and ``subject``."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_CONFIG_MEDIA_TYPE, "digest": digest_bytes(EMPTY_CONFIG), "size": 2},
        "layers": [{"mediaType": media_type, "digest": digest_bytes(envelope), "size": len(envelope)}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": {
            THUMBPRINT_ANNOTATION: thumbprints,
            CREATED_ANNOTATION: created.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def build_signature(
    subject: Descriptor,
    signer: Signer,
    envelope: str = "jws",
    *,
    now: dt.datetime | None = None,
    expiry: dt.timedelta | None = None,
    annotations: dict[str, str] | None = None,
) -> SignatureArtifact:
    """Sign ``subject`` and build the signature manifest plus blobs (no I/O)."""
    media_type = envelope_media_type(envelope)
    now = now or dt.datetime.now(dt.UTC)
    request = SignRequest(
        payload=build_payload(Descriptor(subject.media_type, subject.digest, subject.size), annotations),
        signing_time=now,
        expiry=now + expiry if expiry is not None else None,
    )
    env = sign_envelope(request, signer, media_type)
    manifest = build_signature_manifest(
        subject, env, media_type, chain_thumbprints(list(signer.certificate_chain)), now
    )
    assert media_type in ENVELOPE_MEDIA_TYPES
    desc = Descriptor(
        MANIFEST_MEDIA_TYPE,
        digest_bytes(manifest),
        len(manifest),
        SIGNATURE_ARTIFACT_TYPE,
        {THUMBPRINT_ANNOTATION: chain_thumbprints(list(signer.certificate_chain))},
    )
    blobs = {
        digest_bytes(EMPTY_CONFIG): (EMPTY_CONFIG_MEDIA_TYPE, EMPTY_CONFIG),
        digest_bytes(env): (media_type, env),
    }
    return SignatureArtifact(manifest, desc, blobs, env, media_type)
