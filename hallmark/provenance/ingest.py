"""Reading provenance out of what was pushed: image manifests, their configs, indexes and referrers.

``ingest(...)`` looks at one stored manifest and returns the sources it yields and what it had to
reject; ``ingest_pushed`` writes them (one transaction) and records rejections as a
``provenance.rejected`` event. Kinds of manifest:

- an image manifest: its ``org.opencontainers.image.*`` annotations (origin ``manifest``) and its
  config's labels (origin ``config``);
- an index: its annotations, and buildkit's attestation manifests it lists
  (``vnd.docker.reference.type: attestation-manifest``, unsigned in-toto layers);
- a referrer (a manifest with ``subject``) typed as a DSSE envelope, an in-toto statement or a
  Sigstore bundle (cosign, oras, GitHub attestations): each attestation layer, signature verified
  against the trust store.

A bad statement is rejected whole (never a row with part of its facts); the good ones beside it
are still recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from hallmark.digest import digest_bytes, is_digest
from hallmark.metadata.store import MetadataStore
from hallmark.provenance import dsse
from hallmark.provenance.facts import (
    ANNOTATION,
    LABEL,
    FactError,
    Source,
    check_statement,
    from_oci_keys,
    labels_of,
    obj,
)
from hallmark.provenance.facts import from_statement as statement_source
from hallmark.provenance.store import manifest_digests, record
from hallmark.registry.manifests import IMAGE_TYPES, INDEX_TYPES
from hallmark.storage import BlobStore

log = logging.getLogger(__name__)

MAX_ATTESTATION_BYTES = 4 << 20
MAX_CONFIG_BYTES = 8 << 20
MAX_LAYERS = 32
MAX_ATTESTATION_MANIFESTS = 64
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
PREDICATE_ANNOTATIONS = ("in-toto.io/predicate-type", "predicateType", "dev.sigstore.bundle.predicateType")


@dataclass
class Ingested:
    """What one manifest yielded: sources to write, and (origin, subject, reason) of what was refused."""

    sources: list[Source] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Trust:
    """The trust store's keys, read once per ingest run (files can be rotated live)."""

    keys: list[dsse.TrustedKey]
    configured: bool

    @classmethod
    def load(cls, trust_store: str | None) -> Trust:
        return cls(dsse.load_trusted_keys(trust_store), bool(trust_store))


def _read_blob(blobs: BlobStore, digest: object, limit: int) -> bytes:
    if not isinstance(digest, str) or not is_digest(digest):
        raise FactError(f"invalid blob digest {str(digest)[:100]!r}")
    size = blobs.stat(digest)
    if size is None:
        raise FactError(f"blob {digest} is not stored")
    if size > limit:
        raise FactError(f"blob {digest} is larger than {limit} bytes")
    with blobs.open(digest) as f:
        data = f.read(limit + 1)
    if digest_bytes(data, digest.partition(":")[0]) != digest:
        raise FactError(f"blob {digest} does not match its digest")
    return data


def statement_from_bytes(data: bytes, subject: str, origin: str, trust: Trust) -> Source:
    """One attestation (envelope, bundle or bare statement) about ``subject`` as a source, verified."""
    try:
        envelope, statement = dsse.read_attestation(data)
    except dsse.DsseError as exc:
        raise FactError(str(exc)) from exc
    src = statement_source(check_statement(statement, subject), subject, origin)
    if envelope is not None:
        src.verified, src.verify_detail = dsse.verify(envelope, trust.keys, trust.configured)
        src.facts["signatures"] = len(envelope.signatures)
    else:
        src.verify_detail = "unsigned in-toto statement"
    return src


def _attestation_layers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    layers = doc.get("layers")
    out = []
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and dsse.is_attestation_type(layer.get("mediaType")):
            out.append(layer)
    return out[:MAX_LAYERS]


def _statements(
    blobs: BlobStore, doc: dict[str, Any], manifest_digest: str, subject: str, trust: Trust, result: Ingested
) -> None:
    for i, layer in enumerate(_attestation_layers(doc)):
        origin = manifest_digest if i == 0 else f"{manifest_digest}#{i}"
        try:
            data = _read_blob(blobs, layer.get("digest"), MAX_ATTESTATION_BYTES)
            src = statement_from_bytes(data, subject, origin, trust)
        except FactError as exc:
            result.rejected.append({"origin": origin, "subject": subject, "reason": str(exc)})
            continue
        annotations = layer.get("annotations")
        if isinstance(annotations, dict):
            declared = next(
                (annotations[k] for k in PREDICATE_ANNOTATIONS if isinstance(annotations.get(k), str)), None
            )
            if declared and declared != src.facts.get("predicateType"):
                src.facts["declared_predicateType"] = declared[:255]
        result.sources.append(src)


def is_attestation_manifest(doc: dict[str, Any]) -> bool:
    config = obj(doc, "config")
    return (
        dsse.is_attestation_type(doc.get("artifactType"))
        or dsse.is_attestation_type(config.get("mediaType"))
        or bool(_attestation_layers(doc))
    )


def ingest(meta: MetadataStore, blobs: BlobStore, trust: Trust, repo: str, digest: str) -> Ingested:
    """The sources one stored manifest yields (nothing is written here)."""
    result = Ingested()
    rec = meta.get_manifest(repo, digest, True)
    if rec is None:
        return result
    try:
        doc = orjson.loads(rec.content)
    except orjson.JSONDecodeError:
        return result
    if not isinstance(doc, dict):
        return result
    if rec.subject:
        if is_attestation_manifest(doc):
            _statements(blobs, doc, digest, rec.subject, trust, result)
        return result
    annotated = from_oci_keys(doc.get("annotations"), digest, ANNOTATION, "manifest")
    if annotated is not None:
        result.sources.append(annotated)
    if rec.media_type in INDEX_TYPES:
        _buildkit_attestations(meta, blobs, trust, repo, doc, result)
    elif rec.media_type in IMAGE_TYPES:
        config = obj(doc, "config")
        if dsse.is_attestation_type(config.get("mediaType")) or not str(config.get("mediaType", "")).endswith(
            ("config.v1+json", "container.image.v1+json")
        ):
            return result  # an artifact, not an image: its config holds no labels
        try:
            data = _read_blob(blobs, config.get("digest"), MAX_CONFIG_BYTES)
            labelled = from_oci_keys(labels_of(orjson.loads(data)), digest, LABEL, "config")
        except (FactError, orjson.JSONDecodeError) as exc:
            log.info("%s@%s: config labels not read: %s", repo, digest, exc)
            labelled = None
        if labelled is not None:
            result.sources.append(labelled)
    return result


def _buildkit_attestations(
    meta: MetadataStore, blobs: BlobStore, trust: Trust, repo: str, index: dict[str, Any], result: Ingested
) -> None:
    entries = index.get("manifests")
    n = 0
    for entry in entries if isinstance(entries, list) else []:
        ann = entry.get("annotations") if isinstance(entry, dict) else None
        if not isinstance(ann, dict) or ann.get(REFERENCE_TYPE) != "attestation-manifest":
            continue
        subject, att_digest = ann.get(REFERENCE_DIGEST), entry.get("digest")
        if not isinstance(subject, str) or not is_digest(subject) or not isinstance(att_digest, str):
            result.rejected.append(
                {"origin": str(att_digest)[:100], "subject": "", "reason": f"{REFERENCE_DIGEST} is missing or invalid"}
            )
            continue
        n += 1
        if n > MAX_ATTESTATION_MANIFESTS:
            break
        rec = meta.get_manifest(repo, att_digest, True)
        if rec is None:
            continue
        try:
            doc = orjson.loads(rec.content)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            _statements(blobs, doc, att_digest, subject, trust, result)


def ingest_pushed(pipeline: Any, repo: str, digest: str, trust: Trust | None = None) -> Ingested:
    """Ingest one pushed manifest and write what it yields (the pipeline's ``provenance`` job).

    ``pipeline`` is a ``hallmark.pipeline.service.Pipeline`` (meta, blobs, config, store).
    """
    trust = trust or Trust.load(pipeline.config.signing.trust_store)
    result = ingest(pipeline.meta, pipeline.blobs, trust, repo, digest)
    record(pipeline.meta, repo, result.sources)
    if result.rejected:
        pipeline.store.add_event("provenance.rejected", repo, digest, {"rejected": result.rejected})
        for r in result.rejected:
            log.warning("%s@%s: provenance %s rejected: %s", repo, digest, r["origin"], r["reason"])
    return result


def backfill(pipeline: Any, page: int = 500) -> dict[str, int]:
    """Re-ingest every stored manifest (``provenance.backfill``): images pushed before provenance was
    recorded get their rows, and signatures are verified again against today's trust store."""
    trust = Trust.load(pipeline.config.signing.trust_store)
    stats = {"manifests": 0, "sources": 0, "rejected": 0}
    after: tuple[str, str] | None = None
    while True:
        batch = manifest_digests(pipeline.meta, after, page)
        for repo, digest in batch:
            try:
                result = ingest(pipeline.meta, pipeline.blobs, trust, repo, digest)
                record(pipeline.meta, repo, result.sources)
            except Exception:  # one broken manifest never stops the backfill of the others
                log.exception("provenance backfill of %s@%s failed", repo, digest)
                continue
            stats["manifests"] += 1
            stats["sources"] += len(result.sources)
            stats["rejected"] += len(result.rejected)
        if len(batch) < page:
            return stats
        after = batch[-1]
