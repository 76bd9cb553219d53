"""Sign and verify artifacts through an abstract source/target, plus the OCI-layout implementation.

``ArtifactSource``/``ArtifactTarget`` are the only things the core needs; registries
(``hallmark.signing.registry``) and the server's own stores (``hallmark.signing.service``) plug in
without touching the signing code.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hallmark.digest import digest_bytes
from hallmark.signing.certs import TrustStore
from hallmark.signing.envelope import ENVELOPE_MEDIA_TYPES
from hallmark.signing.keys import Signer
from hallmark.signing.layout import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, Descriptor, LayoutError, OCILayout
from hallmark.signing.manifest import SIGNATURE_ARTIFACT_TYPE, SignatureArtifact, build_signature
from hallmark.signing.policy import TrustPolicyDocument
from hallmark.signing.verify import CheckResult, SignatureVerification, verify_envelope


class ArtifactSource(Protocol):
    """Read access to a repository: a registry repository or an OCI layout."""

    def resolve(self, reference: str) -> Descriptor: ...

    def fetch_manifest(self, digest: str) -> bytes: ...

    def fetch_blob(self, digest: str) -> bytes: ...

    def list_referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]: ...


class ArtifactTarget(ArtifactSource, Protocol):
    """Write access: push blobs and manifests (the registry does the referrers bookkeeping)."""

    def push_blob(self, data: bytes, media_type: str) -> Descriptor: ...

    def push_manifest(self, data: bytes, media_type: str, artifact_type: str | None = None) -> Descriptor: ...


class LayoutStore:
    """``ArtifactTarget`` over an OCI layout directory.

    Referrers are found through the tag-schema index ``sha256-<hex>`` and by scanning manifests whose
    ``subject`` is the target, since notation's layouts use both.
    """

    def __init__(self, root: str | Path) -> None:
        self.layout = OCILayout(root)
        self.root = Path(root)

    def resolve(self, reference: str) -> Descriptor:
        return self.layout.resolve(reference)

    def fetch_manifest(self, digest: str) -> bytes:
        return self.layout.blob(digest)

    def fetch_blob(self, digest: str) -> bytes:
        return self.layout.blob(digest)

    def list_referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        found: dict[str, Descriptor] = {}
        tag = subject.digest.replace(":", "-")
        for desc in self.layout.manifests():
            if desc.annotations.get("org.opencontainers.image.ref.name") == tag and desc.media_type == INDEX_MEDIA_TYPE:
                try:
                    index = json.loads(self.layout.blob(desc.digest))
                    for m in index.get("manifests", []):
                        ref = Descriptor.from_json(m)
                        found.setdefault(ref.digest, ref)
                except (ValueError, LayoutError):
                    continue
        for desc in self.layout.all_manifest_descriptors():
            if desc.media_type != MANIFEST_MEDIA_TYPE or desc.digest in found or not self.layout.has_blob(desc.digest):
                continue
            try:
                manifest = json.loads(self.layout.blob(desc.digest))
            except (ValueError, LayoutError):
                continue
            subj = manifest.get("subject") if isinstance(manifest, dict) else None
            if isinstance(subj, dict) and subj.get("digest") == subject.digest:
                art = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType")
                found[desc.digest] = Descriptor(desc.media_type, desc.digest, desc.size, art, desc.annotations)
        out = list(found.values())
        if artifact_type is not None:
            out = [d for d in out if d.artifact_type == artifact_type]
        return out

    def push_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = digest_bytes(data)
        path = self.layout.blob_path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return Descriptor(media_type, digest, len(data))

    def push_manifest(self, data: bytes, media_type: str, artifact_type: str | None = None) -> Descriptor:
        desc = self.push_blob(data, media_type)
        desc = Descriptor(media_type, desc.digest, desc.size, artifact_type)
        index = self.layout.index()
        manifests = index.setdefault("manifests", [])
        if not any(m.get("digest") == desc.digest for m in manifests):
            manifests.append(desc.to_json())
            tmp = self.root / "index.json.tmp"
            tmp.write_bytes(json.dumps(index, separators=(",", ":")).encode())
            os.replace(tmp, self.root / "index.json")
        return desc


def sign_artifact(
    target: ArtifactTarget,
    reference: str,
    signer: Signer,
    envelope: str = "jws",
    *,
    now: dt.datetime | None = None,
    expiry: dt.timedelta | None = None,
    annotations: dict[str, str] | None = None,
) -> SignatureArtifact:
    """Resolve ``reference``, sign it and push the envelope, empty config and signature manifest."""
    subject = target.resolve(reference)
    sig = build_signature(subject, signer, envelope, now=now, expiry=expiry, annotations=annotations)
    for _digest, (media_type, data) in sig.blobs.items():
        target.push_blob(data, media_type)
    target.push_manifest(sig.manifest, MANIFEST_MEDIA_TYPE, SIGNATURE_ARTIFACT_TYPE)
    return sig


@dataclass
class ArtifactVerification:
    """The outcome for an artifact: it passes when at least one signature passes."""

    reference: str
    subject: Descriptor | None
    policy: str
    level: str
    signatures: list[SignatureVerification] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and (self.level == "skip" or any(s.passed for s in self.signatures))

    @property
    def verified(self) -> SignatureVerification | None:
        return next((s for s in self.signatures if s.passed), None)


def _is_signature(manifest: Any) -> bool:
    if not isinstance(manifest, dict):
        return False
    config = manifest.get("config") or {}
    return SIGNATURE_ARTIFACT_TYPE in (manifest.get("artifactType"), config.get("mediaType"))


def verify_signature_manifest(
    source: ArtifactSource,
    manifest_desc: Descriptor,
    subject: Descriptor,
    statement: Any,
    trust_store: TrustStore | None,
    now: dt.datetime,
) -> SignatureVerification:
    """Fetch one signature manifest and its envelope, then verify the envelope."""

    def fail(reason: str) -> SignatureVerification:
        res = SignatureVerification(statement.name, statement.level, signature_manifest=manifest_desc.digest)
        res.checks.append(CheckResult("integrity", "enforce", False, reason))
        res.error = f"integrity validation failed: {reason}"
        return res

    try:
        manifest = json.loads(source.fetch_manifest(manifest_desc.digest))
    except (ValueError, LayoutError) as exc:
        return fail(f"cannot read signature manifest: {exc}")
    layers = manifest.get("layers") or []
    if len(layers) != 1:
        return fail(f"signature manifest must have exactly one layer, it has {len(layers)}")
    subj = manifest.get("subject") or {}
    if subj.get("digest") != subject.digest:
        return fail("signature manifest subject does not match the artifact")
    layer = layers[0]
    media_type = layer.get("mediaType")
    if media_type not in ENVELOPE_MEDIA_TYPES:
        return fail(f"signature envelope media type {media_type!r} is not supported")
    try:
        envelope = source.fetch_blob(layer["digest"])
    except (LayoutError, KeyError) as exc:
        return fail(f"cannot read signature envelope: {exc}")
    res = verify_envelope(envelope, media_type, subject, statement, trust_store, now)
    res.signature_manifest = manifest_desc.digest
    return res


def verify_artifact(
    source: ArtifactSource,
    reference: str,
    policy: TrustPolicyDocument,
    trust_store: TrustStore | None,
    *,
    repository: str,
    now: dt.datetime | None = None,
    max_signatures: int = 100,
) -> ArtifactVerification:
    """Verify ``reference`` in ``repository`` (the name matched against ``registryScopes``).

    Raises ``PolicyError`` for policy problems (no applicable statement, missing trust store).
    """
    now = now or dt.datetime.now(dt.UTC)
    statement = policy.statement_for(repository)
    subject = source.resolve(reference)
    out = ArtifactVerification(reference, subject, statement.name, statement.level)
    if statement.level == "skip":
        return out
    candidates = []
    for desc in source.list_referrers(subject):
        if desc.artifact_type == SIGNATURE_ARTIFACT_TYPE:
            candidates.append(desc)
            continue
        try:
            if _is_signature(json.loads(source.fetch_manifest(desc.digest))):
                candidates.append(desc)
        except (ValueError, LayoutError):
            continue
    if not candidates:
        out.error = f'no signature is associated with "{reference}", make sure the artifact was signed successfully'
        return out
    for desc in candidates[:max_signatures]:
        res = verify_signature_manifest(source, desc, subject, statement, trust_store, now)
        out.signatures.append(res)
        if res.passed:
            break
    if not any(s.passed for s in out.signatures):
        out.error = "; ".join(s.error or "" for s in out.signatures)
    return out
