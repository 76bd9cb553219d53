"""The pipeline for one image: index (SBOM) -> content checks -> match -> report -> sign.

Each stage is a job in the shared queue (:mod:`hallmark.pipeline.jobs`), so the
work survives restarts and spreads over replicas and ``hallmark worker``
processes. Results are stored in the database and attached to the image in the
registry as OCI artifacts with ``subject``, so ``referrers`` lists them.
Re-matching after an advisory update reads only stored inventories, never layers.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from hallmark import metrics
from hallmark.config import Config
from hallmark.index import INDEXER_VERSION, IndexResult, Limits, index_image
from hallmark.index.limits import Budget
from hallmark.index.names import json_safe
from hallmark.index.sbom import to_cyclonedx, to_spdx
from hallmark.metadata.store import ManifestRecord, MetadataStore
from hallmark.pipeline.jobs import Job, JobQueue
from hallmark.pipeline.store import DbIndexCache, PipelineStore
from hallmark.registry.manifests import IMAGE_TYPES
from hallmark.registry.service import ArtifactLayer, RegistryService, attach_artifact, push_manifest_sync
from hallmark.storage import BlobStore

log = logging.getLogger(__name__)

IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
CYCLONEDX = "application/vnd.cyclonedx+json"
SPDX = "application/spdx+json"
VULN_REPORT = "application/vnd.hallmark.vulnerability-report.v1+json"
CONTENT_REPORT = "application/vnd.hallmark.content-report.v1+json"
REPORT_KIND_ANNOTATION = "dev.hallmark.report.kind"
MAX_CONFIG_BYTES = 8 << 20
# Index jobs that need more than one slice of time, or have very large layers, run in this lane:
# threads of their own serve it, so one hostile or huge image never holds up the others.
INDEX_LARGE = "index-large"


class Pipeline:
    def __init__(self, config: Config, meta: MetadataStore, blobs: BlobStore, registry: RegistryService) -> None:
        self.config = config
        self.meta = meta
        self.blobs = blobs
        self.registry = registry
        self.jobs = JobQueue(meta)
        self.store = PipelineStore(meta)
        self.cache = DbIndexCache(meta)
        self._lock = threading.Lock()
        self._signer: Any = None
        self._signer_loaded = False
        self.wake: Callable[[], None] = lambda: None
        self.clock: Callable[[], float] = time.monotonic  # of index job budgets (tests step it)
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "index": self._job_index,
            INDEX_LARGE: self._job_index_large,
            "match": self._job_match,
            "rematch": self._job_rematch,
            "content-recheck": self._job_content_recheck,  # after a rule update (pipeline.content)
            "content": self._job_content,
            "provenance": self._job_provenance,
        }

    # -- triggers -----------------------------------------------------------------------------
    def on_push(self, repo: str, digest: str) -> None:
        """Queue indexing and provenance reading of a pushed manifest (blocking: call from a worker thread)."""
        payload = {"repo": repo, "digest": digest}
        indexed = self.jobs.enqueue("index", f"{repo}@{digest}", payload)
        if self.jobs.enqueue("provenance", f"{repo}@{digest}", payload) or indexed:
            self.wake()

    def on_delete(self, repo: str, digest: str) -> None:
        self.store.forget_image(repo, digest)

    # -- job runner -----------------------------------------------------------------------------
    def shared_kinds(self) -> list[str]:
        """Job kinds of the shared lane: all but large index jobs."""
        return [k for k in self.handlers if k != INDEX_LARGE]

    def run_one(self, worker: str, kinds: Sequence[str] | None = None) -> bool:
        """Claim and run one job of ``kinds`` (default: any); False when the queue had nothing ready."""
        kinds = list(kinds or self.handlers)
        lease = self.config.pipeline.lease_seconds
        # a large index job may run for max_job_seconds: its lease must outlast it
        longer = {INDEX_LARGE: max(lease, int(self.config.index.max_job_seconds) + 300)}
        job = self.jobs.claim(worker, kinds, lease_seconds=lease, lease_by_kind=longer)
        if job is None:
            return False
        self._run(job)
        return True

    def _run(self, job: Job) -> None:
        started = time.monotonic()
        try:
            self.handlers[job.kind](job.payload)
        except Exception as exc:
            metrics.observe_job(job.kind, time.monotonic() - started, ok=False)
            log.exception("job %s %s failed", job.kind, job.key)
            self.jobs.failed(job, f"{type(exc).__name__}: {exc}")
            return
        metrics.observe_job(job.kind, time.monotonic() - started, ok=True)
        self.jobs.done(job)

    def drain(self, worker: str = "drain", limit: int = 10_000) -> int:
        """Run jobs until none is ready (CLI and tests)."""
        n = 0
        while n < limit and self.run_one(worker):
            n += 1
        return n

    # -- stage: index -----------------------------------------------------------------------------
    def _image_manifest(self, repo: str, digest: str) -> tuple[ManifestRecord, dict[str, Any]] | None:
        rec = self.meta.get_manifest(repo, digest, True)
        if rec is None or rec.media_type not in IMAGE_TYPES or rec.subject:
            return None
        doc = orjson.loads(rec.content)
        config = doc.get("config") or {}
        if config.get("mediaType") not in IMAGE_CONFIG_TYPES:
            return None  # an artifact (SBOM, signature, Helm chart...), not a runnable image
        return rec, doc

    def _job_index_large(self, payload: dict[str, Any]) -> None:
        self._job_index(payload, large=True)

    def _to_large_lane(self, repo: str, digest: str, why: str) -> None:
        self.store.set_image(repo, digest, status="queued", reason=f"moved to the large-job lane: {why}")
        if self.jobs.enqueue(INDEX_LARGE, f"{repo}@{digest}", {"repo": repo, "digest": digest}):
            self.wake()

    def _job_index(self, payload: dict[str, Any], large: bool = False) -> None:
        """Index an image: in the shared lane for one time slice, in the large-job lane with the full budget."""
        repo, digest = payload["repo"], payload["digest"]
        found = self._image_manifest(repo, digest)
        if found is None:
            return
        rec, doc = found
        lanes = self.config.index
        limits = Limits.from_settings(lanes.model_dump())
        if not large:
            layers = doc.get("layers")
            layers = layers if isinstance(layers, list) else []
            size = sum(d["size"] for d in layers if isinstance(d, dict) and isinstance(d.get("size"), int))
            if size > lanes.large_job_bytes:
                self._to_large_lane(repo, digest, f"{size} bytes of layers")
                return
        budget = (
            Budget(limits, clock=self.clock)
            if large
            else Budget(limits, clock=self.clock, seconds=lanes.slice_seconds, final=False)
        )
        self.store.set_image(repo, digest, status="indexing", reason=None)
        config_digest = doc["config"]["digest"]
        if (self.blobs.stat(config_digest) or 0) > MAX_CONFIG_BYTES:
            self._fail(repo, digest, "index failed: image config larger than 8 MiB")
            return
        with self.blobs.open(config_digest) as f:
            config = f.read(MAX_CONFIG_BYTES)
        self._tag_expiry(repo, digest, config)
        content = self._content_run()
        result = index_image(
            rec.content,
            config,
            self.blobs.open,
            manifest_digest=digest,
            cache=self.cache,
            on_entry=content.on_entry if content is not None else None,
            limits=limits,
            budget=budget,
        )
        if result.status == "deferred":
            self._to_large_lane(repo, digest, f"longer than {lanes.slice_seconds:g} seconds")
            return
        if result.status != "done":
            self._fail(repo, digest, result.failure or "index failed")
            return
        if content is not None:
            doc = content.report(config, repo, digest)
            try:
                report = orjson.dumps(doc)
            except TypeError:  # file names that are not UTF-8: shown as \xNN (hallmark.index.names)
                doc = json_safe(doc)
                report = orjson.dumps(doc)
            self._attach_report(repo, rec, "content", CONTENT_REPORT, report, doc)
        self.store.set_image(
            repo,
            digest,
            status="indexed",
            indexer_version=INDEXER_VERSION,
            distro=result.distro.__dict__ if result.distro else None,
            package_count=len(result.packages),
        )
        self._search_rows(repo, digest, result.packages, config, result.layers)
        name = f"{repo}@{digest}"
        for kind, media_type, body in (
            ("sbom-cyclonedx", CYCLONEDX, to_cyclonedx(result, name)),
            ("sbom-spdx", SPDX, to_spdx(result, name)),
        ):
            self._attach_report(repo, rec, kind, media_type, body.encode())
        self.store.add_event("image.indexed", repo, digest, {"packages": len(result.packages)})
        self.jobs.enqueue("match", f"{repo}@{digest}", {"repo": repo, "digest": digest})

    def _search_rows(self, repo: str, digest: str, packages: list[Any], config: bytes, layers: list[str]) -> None:
        """Package rows, text document and layer chain (hallmark.discovery.packages); a failure
        there never fails the index (the ``packages.backfill`` job writes them later)."""
        from hallmark.discovery.packages import labels_from_config, write_image

        try:
            write_image(self.meta, repo, digest, packages, labels_from_config(config), layers)
        except Exception:
            log.exception("search rows of %s@%s not written", repo, digest)

    def _tag_expiry(self, repo: str, digest: str, config: bytes) -> None:
        """Due times from an ``expires-after`` label, read here because the config is read anyway
        (hallmark.lifecycle.tags); a malformed label or a failure here never fails the index."""
        from hallmark.lifecycle.tags import apply_label_expiry

        try:
            found = apply_label_expiry(self.meta, repo, digest, config)
        except Exception:
            log.exception("tag expiry label of %s@%s not applied", repo, digest)
            return
        if found is not None and found.warning:
            log.warning("%s@%s: %s", repo, digest, found.warning)

    def _content_run(self) -> Any:
        if not self.config.pipeline.content_checks:
            return None
        from hallmark.pipeline.content import ContentRun, rules_for

        try:
            return ContentRun(rules_for(self.config, self))
        except Exception as exc:  # bad rule bundle: index anyway, say why content checks did not run
            log.error("content checks disabled for this run: %s", exc)
            return None

    def _fail(self, repo: str, digest: str, reason: str) -> None:
        self.store.set_image(repo, digest, status="failed", reason=reason)
        self.store.add_event("image.failed", repo, digest, {"reason": reason})

    def inventory(self, digest: str) -> IndexResult | None:
        doc = self.cache.get("image", INDEXER_VERSION, digest)
        return IndexResult.from_json(doc) if doc else None

    def _job_provenance(self, payload: dict[str, Any]) -> None:
        """Annotations, labels and attestations of any pushed manifest (hallmark.provenance.ingest)."""
        from hallmark.provenance.ingest import ingest_pushed

        ingest_pushed(self, payload["repo"], payload["digest"])

    # -- stage: match (filled in by the advisories wiring) ------------------------------------------------
    def _job_match(self, payload: dict[str, Any]) -> None:
        from hallmark.pipeline.matching import match_image

        match_image(self, payload["repo"], payload["digest"])
        self._lifecycle(payload["repo"], payload["digest"])

    def _lifecycle(self, repo: str, digest: str) -> None:
        """End of life of the image's OS and runtimes (hallmark.lifecycle.eol); never fails the match."""
        from hallmark.lifecycle.eol import refresh_image

        try:
            refresh_image(self, repo, digest)
        except Exception:
            log.exception("end-of-life matching failed for %s@%s", repo, digest)

    def _job_rematch(self, payload: dict[str, Any]) -> None:
        from hallmark.pipeline.matching import rematch_all

        stats: dict[str, Any] = dict(rematch_all(self))
        if payload.get("endoflife_changed"):  # the set brought new end-of-life data
            from hallmark.lifecycle.eol import refresh_all

            stats["lifecycle"] = refresh_all(self)
        self.store.add_event("advisories.rematched", None, None, {"set": payload.get("set"), **stats})

    def _job_content_recheck(self, payload: dict[str, Any]) -> None:
        from hallmark.pipeline.content import recheck_all

        self.store.add_event("content.rules_updated", None, None, {**payload, **recheck_all(self)})

    def _job_content(self, payload: dict[str, Any]) -> None:
        from hallmark.pipeline.content import recheck_image

        recheck_image(self, payload["repo"], payload["digest"])

    # -- reports and signatures ----------------------------------------------------------------------
    def _attach_report(
        self, repo: str, subject: ManifestRecord, kind: str, media_type: str, body: bytes, doc: Any = None
    ) -> str:
        created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        artifact = attach_artifact(
            self.registry,
            repo,
            subject,
            media_type,
            [ArtifactLayer(media_type, body)],
            annotations={"org.opencontainers.image.created": created, REPORT_KIND_ANNOTATION: kind},
        )
        signature = self._sign(repo, artifact)
        self.store.put_report(
            repo,
            subject.digest,
            kind,
            doc if doc is not None else orjson.loads(body),
            artifact_digest=artifact,
            signature_digest=signature,
        )
        return artifact

    def signer(self) -> Any:
        with self._lock:
            if not self._signer_loaded:
                self._signer_loaded = True
                if self.config.signing.key:
                    from hallmark.signing import load_signer

                    self._signer = load_signer(self.config.signing.key, self.config.signing.cert)
            return self._signer

    def _sign(self, repo: str, artifact_digest: str) -> str | None:
        signer = self.signer()
        if signer is None:
            return None
        return sign_manifest(self, repo, artifact_digest, signer)


def sign_manifest(pipeline: Pipeline, repo: str, digest: str, signer: Any) -> str:
    """Sign a stored manifest with a Notary Project signature attached as its referrer."""
    from hallmark.signing import build_signature
    from hallmark.signing.layout import Descriptor

    rec = pipeline.meta.get_manifest(repo, digest, True)
    if rec is None:
        raise KeyError(f"{repo}@{digest}")
    subject = Descriptor(rec.media_type, rec.digest, len(rec.content), rec.artifact_type)
    sig = build_signature(subject, signer, pipeline.config.signing.envelope)
    for blob_digest, (_mt, data) in sig.blobs.items():
        stored, size = pipeline.blobs.put(data, blob_digest)
        pipeline.meta.link_blob(repo, stored, size)
    return push_manifest_sync(pipeline.registry, repo, sig.manifest, "application/vnd.oci.image.manifest.v1+json")
