"""Server-side signing and verification of stored images and their report artifacts.

``sign_image`` and ``verify_image`` are what the API, and later the catalog's promotion gate, call.
They read the server's own stores through ``LocalStore`` (an ``ArtifactTarget``) instead of going
through HTTP, so they work the same inside ``hallmark serve``, ``hallmark worker`` and CLI tools.
The latest outcome per image is kept in ``image_verifications`` for the image API to show.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import delete, select

from hallmark.digest import digest_bytes, is_digest
from hallmark.metadata.store import utcnow
from hallmark.signing.artifact import ArtifactVerification, verify_artifact
from hallmark.signing.certs import TrustStore
from hallmark.signing.errors import PolicyError, SigningError
from hallmark.signing.layout import Descriptor, LayoutError
from hallmark.signing.policy import TrustPolicyDocument, load_policy
from hallmark.signing.tables import image_verifications
from hallmark.signing.verify import SignatureVerification

if TYPE_CHECKING:
    from hallmark.config import Config
    from hallmark.pipeline.service import Pipeline

MAX_BLOB_BYTES = 32 << 20
_PAGE = 1000


class NotFound(LookupError):
    """The repository has no such manifest."""


class LocalStore:
    """One repository of this server as an ``ArtifactTarget`` (metadata database + blob store)."""

    def __init__(self, pipeline: Pipeline, repo: str) -> None:
        self.pipeline = pipeline
        self.repo = repo

    def resolve(self, reference: str) -> Descriptor:
        rec = self.pipeline.meta.get_manifest(self.repo, reference, is_digest(reference))
        if rec is None:
            raise LayoutError(f"{self.repo}: manifest {reference} not found")
        return Descriptor(rec.media_type, rec.digest, len(rec.content), rec.artifact_type)

    def fetch_manifest(self, digest: str) -> bytes:
        rec = self.pipeline.meta.get_manifest(self.repo, digest, True)
        if rec is None:
            raise LayoutError(f"{self.repo}: manifest {digest} not found")
        return rec.content

    def fetch_blob(self, digest: str) -> bytes:
        if not is_digest(digest) or self.pipeline.meta.blob_size(self.repo, digest) is None:
            raise LayoutError(f"{self.repo}: blob {digest} not found")
        with self.pipeline.blobs.open(digest) as f:
            data = f.read(MAX_BLOB_BYTES + 1)
        if len(data) > MAX_BLOB_BYTES:
            raise LayoutError(f"{self.repo}: blob {digest} is larger than {MAX_BLOB_BYTES} bytes")
        if digest_bytes(data) != digest:
            raise LayoutError(f"{self.repo}: blob {digest} is corrupt (content does not match its digest)")
        return data

    def list_referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        out: list[Descriptor] = []
        last: str | None = None
        while True:
            page = self.pipeline.meta.referrers(self.repo, subject.digest, artifact_type, _PAGE, last)
            out.extend(Descriptor(r.media_type, r.digest, r.size, r.artifact_type) for r in page)
            if len(page) < _PAGE:
                return out
            last = page[-1].digest

    def push_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest, size = self.pipeline.blobs.put(data, digest_bytes(data))
        self.pipeline.meta.link_blob(self.repo, digest, size)
        return Descriptor(media_type, digest, size)

    def push_manifest(self, data: bytes, media_type: str, artifact_type: str | None = None) -> Descriptor:
        from hallmark.registry.service import push_manifest_sync

        digest = push_manifest_sync(self.pipeline.registry, self.repo, data, media_type)
        return Descriptor(media_type, digest, len(data), artifact_type)


def sign_image(pipeline: Pipeline, repo: str, digest: str) -> str:
    """Sign a stored manifest with the configured enterprise key; returns the signature manifest digest.

    Raises ``SigningError`` when no key is configured and ``NotFound`` for an unknown manifest.
    """
    from hallmark.pipeline.service import sign_manifest

    signer = pipeline.signer()
    if signer is None:
        raise SigningError("no signing key is configured (signing.key and signing.cert)")
    if pipeline.meta.get_manifest(repo, digest, True) is None:
        raise NotFound(f"{repo}@{digest}")
    signature = sign_manifest(pipeline, repo, digest, signer)
    pipeline.store.add_event("image.signed", repo, digest, {"signature": signature})
    return signature


def load_trust(config: Config) -> tuple[TrustPolicyDocument, TrustStore | None]:
    """The configured trust policy and trust store, read on each call so files can be rotated live."""
    if not config.signing.trust_policy:
        raise PolicyError("no trust policy is configured (signing.trust_policy)")
    try:
        doc = load_policy(Path(config.signing.trust_policy).read_bytes())
    except OSError as exc:
        raise PolicyError(f"cannot read the trust policy: {exc}") from exc
    store = TrustStore(config.signing.trust_store) if config.signing.trust_store else None
    return doc, store


def scope_name(config: Config, repo: str) -> str:
    """The name matched against ``registryScopes``: ``<registry host>/<repo>``, as clients see the image.

    The host is taken from ``server.public_url`` when set, else from ``server.listen``.
    """
    host = urlsplit(config.server.public_url).netloc if config.server.public_url else ""
    return f"{host or config.server.listen}/{repo}"


def _signature_json(sig: SignatureVerification) -> dict[str, Any]:
    info = sig.signer_info
    leaf = info.certificate_chain[0] if info and info.certificate_chain else None
    return {
        "signature_manifest": sig.signature_manifest,
        "passed": sig.passed,
        "level": sig.level,
        "error": sig.error,
        "warnings": sig.warnings,
        "signer": leaf.subject.rfc4514_string() if leaf is not None else None,
        "issuer": leaf.issuer.rfc4514_string() if leaf is not None else None,
        "signing_time": info.signing_time.isoformat() if info and info.signing_time else None,
        "envelope": info.envelope_media_type if info else None,
        "checks": [{"check": c.check, "action": c.action, "ok": c.ok, "message": c.message} for c in sig.checks],
    }


def _verify(
    store: LocalStore,
    digest: str,
    doc: TrustPolicyDocument,
    trust: TrustStore | None,
    scope: str,
    now: dt.datetime | None,
) -> dict[str, Any]:
    try:
        res: ArtifactVerification = verify_artifact(store, digest, doc, trust, repository=scope, now=now)
    except (PolicyError, LayoutError) as exc:  # e.g. a statement naming a trust store that does not exist
        return {"passed": False, "level": None, "policy": None, "error": str(exc), "signatures": []}
    return {
        "passed": res.passed,
        "level": res.level,
        "policy": res.policy,
        "error": res.error,
        "signatures": [_signature_json(s) for s in res.signatures],
    }


def verify_image(
    pipeline: Pipeline, repo: str, digest: str, *, reports: bool = False, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Verify an image's signatures (and with ``reports`` each report artifact's) under the configured policy.

    The image passes when one of its signatures passes at the policy's level; the result is stored
    as the image's latest verification status. Raises ``PolicyError`` when no usable policy is
    configured and ``NotFound`` for an unknown manifest.
    """
    doc, trust = load_trust(pipeline.config)
    if pipeline.meta.get_manifest(repo, digest, True) is None:
        raise NotFound(f"{repo}@{digest}")
    store = LocalStore(pipeline, repo)
    scope = scope_name(pipeline.config, repo)
    out: dict[str, Any] = {"repository": repo, "digest": digest, "scope": scope}
    out.update(_verify(store, digest, doc, trust, scope, now))
    if reports:
        checked = []
        for rep in pipeline.store.report_kinds(repo, digest):
            if not rep.get("artifact_digest"):
                continue
            one = _verify(store, rep["artifact_digest"], doc, trust, scope, now)
            checked.append({"kind": rep["kind"], "artifact_digest": rep["artifact_digest"], **one})
        out["reports"] = checked
        out["reports_passed"] = all(r["passed"] for r in checked)
    out["checked_at"] = (now or utcnow()).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _save(pipeline, out)
    return out


def _save(pipeline: Pipeline, result: dict[str, Any]) -> None:
    repo, digest = result["repository"], result["digest"]
    with pipeline.meta.transaction() as conn:
        conn.execute(
            delete(image_verifications).where(
                image_verifications.c.repo_name == repo, image_verifications.c.digest == digest
            )
        )
        conn.execute(
            image_verifications.insert().values(
                repo_name=repo,
                digest=digest,
                passed=bool(result["passed"]),
                level=result["level"],
                policy=(result["policy"] or "")[:255] or None,
                error=result["error"],
                detail=orjson.dumps(result).decode(),
                checked_at=utcnow(),
            )
        )


def verification_status(pipeline: Pipeline, repo: str, digest: str) -> dict[str, Any] | None:
    """The latest stored outcome for an image (no signature details), or None when never verified."""
    with pipeline.meta.engine.connect() as conn:
        row = (
            conn.execute(
                select(image_verifications).where(
                    image_verifications.c.repo_name == repo, image_verifications.c.digest == digest
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    detail = orjson.loads(row["detail"])
    status: dict[str, Any] = {
        "passed": bool(row["passed"]),
        "level": row["level"],
        "policy": row["policy"],
        "error": row["error"],
        "checked_at": row["checked_at"],
        "signatures": len(detail.get("signatures") or []),
    }
    if "reports_passed" in detail:
        status["reports_passed"] = detail["reports_passed"]
    return status
