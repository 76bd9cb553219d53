"""Admission reviews decided: the containers of a request checked against the namespace's policy.

Per container, in order: exempt image (``exempt_images``) -> allowed; a registry other than
Hallmark -> allowed only when allow-listed (Hallmark knows nothing else about it); a Hallmark
image -> its tag must resolve to a digest here, and the digest must pass the rules of
:mod:`hallmark.admission.rules` (stage by the pull decision, signature, grade, severity).

Modes: ``enforce`` denies when a container fails; ``audit`` allows and puts what would have
been denied into ``response.warnings``; ``off`` allows without looking. What cannot be
evaluated (a reference the runtime could not parse either, an evaluation error or one over
the time budget, a malformed review) follows ``failure_policy``: ``fail`` denies, ``ignore``
allows with a warning. A tag Hallmark does not have is a rule failure, not an evaluation
failure: allowing it would let whatever is pushed under that tag later run unreviewed.

Every answer names, per failed container, the rule, the image and what to use instead (the
replacement recorded at deprecation or retirement, or the repository's newest approved digest).
Nothing else is revealed: the endpoint is public.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hallmark.admission.policy import Policy, PolicySet
from hallmark.admission.references import ImageRef, InvalidReference, parse_reference
from hallmark.admission.review import Container, Review, response
from hallmark.admission.rules import (
    DecisionCache,
    Reader,
    Verdict,
    approved_alternative,
    evaluate_digest,
    reader,
    resolve_tag,
    stamp,
)
from hallmark.admission.tables import admission_decisions
from hallmark.metadata.store import utcnow

if TYPE_CHECKING:
    from hallmark.pipeline.service import Pipeline

log = logging.getLogger(__name__)
RECORD_REFRESH_SECONDS = 60.0  # an unchanged decision's row is rewritten at most this often
UNEVALUABLE = "reference"  # the rule of containers whose image cannot be evaluated


@dataclass
class ContainerResult:
    container: str
    type: str
    image: str
    allowed: bool
    rule: str  # the failed rule, or why it passed: approved, deprecated, exempt, registry, unchanged
    message: str | None = None  # why it is refused (or would be)
    warning: str | None = None
    digest: str | None = None
    pin: str | None = None  # the digest-pinned reference for the mutating webhook
    pointer: str = ""
    repo: str | None = None  # the Hallmark repository, for Hallmark images

    def reason(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "type": self.type,
            "image": self.image,
            "digest": self.digest,
            "rule": self.rule,
            "allowed": self.allowed,
            "message": self.message or self.warning,
        }


@dataclass
class Decision:
    """One answered review, with what the audit log and the decisions table record."""

    response: dict[str, Any]
    allowed: bool
    mode: str
    review: Review | None = None
    results: list[ContainerResult] = field(default_factory=list)
    error: str | None = None  # set when the failure policy decided

    def reasons(self) -> list[dict[str, Any]]:
        out = [r.reason() for r in self.results]
        if self.error:
            out.append({"rule": "failure_policy", "message": self.error})
        return out


class Admission:
    """The webhook's decisions for one configuration; thread-safe (reviews run in worker threads)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.meta = pipeline.meta
        self.policies = PolicySet(pipeline.config)
        self.cache = DecisionCache(pipeline.config.admission.cache_size)
        self._recorded: dict[tuple[str, str, str, str], tuple[bytes, float]] = {}
        self._record_lock = threading.Lock()

    @property
    def timeout(self) -> float:
        return self.policies.cfg.timeout_seconds

    @property
    def max_request_bytes(self) -> int:
        return self.policies.cfg.max_request_bytes

    # -- answers ------------------------------------------------------------------------
    def failure(self, uid: str, message: str, code: int = 400, review: Review | None = None) -> Decision:
        """The failure policy's answer for a review that could not be evaluated."""
        if self.policies.failure_policy == "ignore":
            text = f"Hallmark admission could not evaluate this request ({message}); allowed by failure_policy = ignore"
            return Decision(response(uid, True, warnings=[text]), True, "enforce", review, error=message)
        text = f"Hallmark admission could not evaluate this request: {message} (failure_policy = fail)"
        return Decision(response(uid, False, code=code, message=text), False, "enforce", review, error=message)

    def decide(self, review: Review, mutate: bool = False) -> Decision:
        """Evaluate every container of ``review`` (validating) or pin them (``mutate``)."""
        exempt = self.policies.namespace_exempt(review.namespace) if review.namespace else None
        policy = self.policies.for_namespace(review.namespace)
        if exempt is not None or policy.mode == "off" or not review.containers:
            if exempt is not None:
                why = f"namespace {review.namespace} is exempt ({exempt!r} in [admission] exempt_namespaces)"
            else:
                why = "admission mode is off" if policy.mode == "off" else "nothing to check"
            results = [
                ContainerResult(c.name, c.type, str(c.image), True, "exempt", warning=why) for c in review.containers
            ]
            return Decision(response(review.uid, True), True, policy.mode, review, results)
        with reader(self.meta) as r:
            results = [self._container(r, policy, review, c) for c in review.containers]
            if not mutate:
                self._suggest(r, policy, results)
        if mutate:
            return self._mutation(review, policy, results)
        return self._verdict(review, policy, results)

    def _verdict(self, review: Review, policy: Policy, results: list[ContainerResult]) -> Decision:
        ignore = self.policies.failure_policy == "ignore"
        denied = [x for x in results if not x.allowed and not (ignore and x.rule == UNEVALUABLE)]
        warnings = [x.warning for x in results if x.warning and x.allowed]
        unevaluable = [x for x in results if not x.allowed and ignore and x.rule == UNEVALUABLE]
        warnings += [f"{x.message}; allowed by failure_policy = ignore" for x in unevaluable if x.message]
        if policy.mode == "audit":
            would = [f"audit mode, would be denied: {x.message}" for x in denied if x.message]
            return Decision(response(review.uid, True, warnings=would + warnings), True, "audit", review, results)
        if denied:
            what = f"{review.kind} {review.namespace + '/' if review.namespace else ''}{review.name or '(unnamed)'}"
            message = f"Hallmark admission policy {policy.source} denied {what}: " + "; ".join(
                x.message or x.rule for x in denied
            )
            return Decision(
                response(review.uid, False, code=403, message=message, warnings=warnings),
                False,
                policy.mode,
                review,
                results,
            )
        return Decision(response(review.uid, True, warnings=warnings), True, policy.mode, review, results)

    def _mutation(self, review: Review, policy: Policy, results: list[ContainerResult]) -> Decision:
        """Only pins; the validating webhook decides, so a mutation never denies on the rules."""
        patch = [{"op": "replace", "path": x.pointer, "value": x.pin} for x in results if x.pin]
        return Decision(response(review.uid, True, patch=patch), True, policy.mode, review, results)

    # -- one container ------------------------------------------------------------------
    def _container(self, r: Reader, policy: Policy, review: Review, c: Container) -> ContainerResult:
        label = f"container {c.name!r}" + ("" if c.type == "container" else f" ({c.type})")
        raw = c.image if isinstance(c.image, str) else ""
        out = ContainerResult(c.name, c.type, raw, True, "", pointer=c.pointer)
        if (c.type, c.name, c.image) in review.unchanged:
            out.rule = "unchanged"  # admitted when it entered the spec; an update must not evict it
            return out
        try:
            ref: ImageRef | None = parse_reference(c.image)
        except InvalidReference as exc:
            ref = None
            if raw and policy.image_exempt(raw, None):
                out.rule = "exempt"
                return out
            return self._fail(out, UNEVALUABLE, f"{label}: image {raw!r} is not a valid image reference: {exc}")
        assert ref is not None
        if policy.image_exempt(raw, ref):
            out.rule = "exempt"
            return out
        if not self.policies.is_hallmark(ref):
            entry = policy.registry_allowed(ref)
            if entry is not None:
                out.rule = "registry"  # trusted as configured: Hallmark has no catalog entry for it
                return out
            hosts = ", ".join(sorted(self.policies.hallmark_hosts)) or "Hallmark (set [server] public_hosts)"
            return self._fail(
                out,
                "registry",
                f"{label}: image {raw} comes from {ref.host}, which is neither Hallmark nor in allowed_registries; "
                f"push it to {hosts}, get it approved and use that reference",
            )
        repo = out.repo = ref.path
        digest = ref.digest or resolve_tag(r, repo, ref.effective_tag)
        if digest is None:
            return self._fail(out, "resolve", f"{label}: tag {ref.effective_tag} of {repo} does not exist in Hallmark")
        out.digest = digest
        current = stamp(r, repo, digest)
        if not current or not current[0]:
            return self._fail(out, "resolve", f"{label}: {repo}@{digest} does not exist in Hallmark")
        if not ref.digest:
            out.pin = ref.pinned(digest)
        key = (repo, digest, policy.rules)
        verdict = self.cache.get(key, current)
        if verdict is None:
            verdict = evaluate_digest(self.pipeline, r, repo, digest, policy.rules)
            if policy.rules.require_signature:
                current = stamp(r, repo, digest)  # the verification just stored its outcome
            self.cache.put(key, current, verdict)
        return self._apply(out, label, raw, verdict)

    def _apply(self, out: ContainerResult, label: str, raw: str, verdict: Verdict) -> ContainerResult:
        if verdict.allowed:
            out.rule = verdict.stage
            if verdict.warning:
                out.warning = f"{label}: {verdict.warning}"
            return out
        rule = verdict.failures[0][0]
        texts = "; ".join(f"[{rule_}] {text}" for rule_, text in verdict.failures)
        return self._fail(out, rule, f"{label}: image {raw}: {texts}", replacement=verdict.replacement)

    @staticmethod
    def _fail(out: ContainerResult, rule: str, message: str, replacement: str | None = None) -> ContainerResult:
        out.allowed = False
        out.rule = rule
        out.message = message
        if replacement and "instead" not in message:
            out.message += f"; use {replacement} instead"
        return out

    def _suggest(self, r: Reader, policy: Policy, results: list[ContainerResult]) -> None:
        """Name the repository's newest approved digest in denials that name no replacement
        (read at denial time, never cached: approvals elsewhere in the repository change it)."""
        for x in results:
            if x.allowed or x.rule in ("registry", UNEVALUABLE, "retired") or not x.message:
                continue
            if "instead" in x.message:
                continue
            try:
                ref = parse_reference(x.image)
            except InvalidReference:
                continue
            alt = approved_alternative(r, ref.path, x.digest or "")
            if alt:
                x.message += f"; use {ref.written_name()}@{alt} (approved) instead"
            else:
                x.message += f"; {ref.path} has no approved image in Hallmark yet"

    # -- records ------------------------------------------------------------------------
    def record(self, decision: Decision, cluster: str) -> None:
        """The latest decision per workload in ``admission_decisions`` (not for dry runs). An
        unchanged decision is rewritten at most every ``RECORD_REFRESH_SECONDS`` per process."""
        review = decision.review
        if review is None or review.dry_run or not review.kind:
            return
        reasons = orjson.dumps(decision.reasons())
        key = (cluster[:253], review.namespace[:253], review.kind[:64], review.name[:253])
        fingerprint = reasons + (b"1" if decision.allowed else b"0") + decision.mode.encode()
        now = time.monotonic()
        with self._record_lock:
            last = self._recorded.get(key)
            if last is not None and last[0] == fingerprint and now - last[1] < RECORD_REFRESH_SECONDS:
                return
            if len(self._recorded) > 100_000:
                self._recorded.clear()
            self._recorded[key] = (fingerprint, now)
        values = {
            "uid": review.uid[:64],
            "operation": review.operation[:16],
            "allowed": decision.allowed,
            "mode": decision.mode,
            "reasons": reasons.decode(),
            "decided_at": utcnow(),
        }
        insert = pg_insert if self.meta.dialect == "postgresql" else sqlite_insert
        stmt = insert(admission_decisions).values(cluster=key[0], namespace=key[1], kind=key[2], name=key[3], **values)
        stmt = stmt.on_conflict_do_update(index_elements=["cluster", "namespace", "kind", "name"], set_=values)
        with self.meta.transaction() as conn:
            conn.execute(stmt)


def latest_decisions(pipeline: Pipeline, cluster: str | None = None) -> list[dict[str, Any]]:
    """Every recorded decision (of one cluster), newest first: for inventories and the portal."""
    from sqlalchemy import select

    q = select(admission_decisions).order_by(admission_decisions.c.decided_at.desc())
    if cluster is not None:
        q = q.where(admission_decisions.c.cluster == cluster)
    with pipeline.meta.engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for row in rows:
        doc = dict(row)
        doc["reasons"] = orjson.loads(doc["reasons"])
        decided = doc["decided_at"]
        if isinstance(decided, dt.datetime):
            doc["decided_at"] = (decided if decided.tzinfo else decided.replace(tzinfo=dt.UTC)).isoformat()
        out.append(doc)
    return out
