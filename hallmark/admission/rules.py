"""The per-digest rules of admission, and the decision cache that keeps them cheap.

A Hallmark digest is admitted when the pull decision (:func:`hallmark.lifecycle.pull_policy.decide`,
the function the registry applies to every manifest GET) says it is ``approved`` or
``deprecated`` (allowed, with its warning naming the replacement); ``retired`` is always
refused with the pull's own message, even where a namespace lets pulls of retired images
through with a warning; then, as the policy asks, a valid enterprise signature, a minimum
health grade and no unsuppressed finding at or above a severity.

Caching. A verdict is cached per ``(repository, digest, DigestRules)``: the rules are the
policy version. Each entry keeps the image's *state stamp* from when it was computed, and is
used only while one indexed read returns the same stamp (:data:`STAMP_SQL`, five primary-key
or index lookups in one statement): the manifest's presence, ``catalog_entries.updated_at``
(stage, replacement: written by every promotion), ``images.updated_at`` (grade, findings and
summary: written by every match, re-match, VEX change and re-grade), the stored verification
outcome, and the count and newest time of the image's referrers (a signature pushed over the
registry). Every writer of those rows stamps them in the database, so a change made through
any replica, or by a worker process, is seen by the next review on every replica: no
notification, no expiry time, and no stale allow after a retirement.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from hallmark.admission.policy import DigestRules
from hallmark.lifecycle.pull_policy import decide
from hallmark.metadata.store import MetadataStore
from hallmark.pipeline.findings import at_or_above, of_summary

if TYPE_CHECKING:
    from hallmark.pipeline.service import Pipeline

GRADE_ORDER = ("A", "B", "C", "D", "E", "F")
STAMP_SQL = (
    "SELECT"
    " (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id"
    "  WHERE r.name = :repo AND m.digest = :digest),"
    " (SELECT updated_at FROM catalog_entries WHERE repo_name = :repo AND digest = :digest),"
    " (SELECT updated_at FROM images WHERE repo_name = :repo AND digest = :digest),"
    " (SELECT passed FROM image_verifications WHERE repo_name = :repo AND digest = :digest),"
    " (SELECT count(*) FROM manifests m JOIN repositories r ON r.id = m.repo_id"
    "  WHERE r.name = :repo AND m.subject_digest = :digest),"
    " (SELECT max(m.created_at) FROM manifests m JOIN repositories r ON r.id = m.repo_id"
    "  WHERE r.name = :repo AND m.subject_digest = :digest)"
)
TAG_SQL = "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repo_id WHERE r.name = :repo AND t.name = :tag"
APPROVED_SQL = (
    "SELECT digest FROM catalog_entries WHERE repo_name = :repo AND stage = 'approved' AND digest <> :digest"
    " ORDER BY stage_changed_at DESC LIMIT 1"
)
IMAGE_SQL = "SELECT status, grade, summary FROM images WHERE repo_name = :repo AND digest = :digest"
VERIFIED_SQL = "SELECT passed FROM image_verifications WHERE repo_name = :repo AND digest = :digest"


@dataclass(frozen=True)
class Verdict:
    """The rules' outcome for one digest: ``failures`` are ``(rule, text)``; ``warning`` for deprecated."""

    stage: str
    failures: tuple[tuple[str, str], ...] = ()
    warning: str | None = None
    replacement: str | None = None

    @property
    def allowed(self) -> bool:
        return not self.failures


class Reader:
    """Fixed-SQL reads for one review: the raw SQLite connection of this thread, or one pooled
    PostgreSQL connection for the whole review (not one per container)."""

    def __init__(self, meta: MetadataStore, conn: Any) -> None:
        self._sqlite = meta.sqlite_conn()
        self._conn = conn

    def one(self, sql: str, **params: Any) -> tuple[Any, ...] | None:
        if self._sqlite is not None:
            row = self._sqlite.execute(sql, params).fetchone()
        else:
            row = self._conn.execute(text(sql), params).first()
        return tuple(row) if row is not None else None


@contextmanager
def reader(meta: MetadataStore) -> Iterator[Reader]:
    if meta.sqlite_conn() is not None:
        yield Reader(meta, None)
        return
    with meta.engine.connect() as conn:
        yield Reader(meta, conn)


def stamp(r: Reader, repo: str, digest: str) -> tuple[str, ...]:
    """The image's state stamp (see the module docstring); ``stamp[0]`` is "" when the manifest is gone."""
    row = r.one(STAMP_SQL, repo=repo, digest=digest) or ()
    return tuple("" if v is None else str(v) for v in row)


def resolve_tag(r: Reader, repo: str, tag: str) -> str | None:
    row = r.one(TAG_SQL, repo=repo, tag=tag)
    return str(row[0]) if row else None


def approved_alternative(r: Reader, repo: str, digest: str) -> str | None:
    """The most recently approved other digest of ``repo``: what a denial suggests instead."""
    row = r.one(APPROVED_SQL, repo=repo, digest=digest)
    return str(row[0]) if row else None


class DecisionCache:
    """LRU of verdicts, each with the stamp it was computed at; thread-safe (reviews run in threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, DigestRules], tuple[tuple[str, ...], Verdict]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, DigestRules], current: tuple[str, ...]) -> Verdict | None:
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] != current:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found[1]

    def put(self, key: tuple[str, str, DigestRules], at: tuple[str, ...], verdict: Verdict) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = (at, verdict)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def evaluate_digest(pipeline: Pipeline, r: Reader, repo: str, digest: str, rules: DigestRules) -> Verdict:
    """Every rule for one digest (uncached); all failures are collected so one message names them."""
    pull = decide(pipeline.meta, repo, digest, "deny")
    failures: list[tuple[str, str]] = []
    warning = None
    if pull.stage == "retired":
        # The pull's own refusal; where retired pulls only warn, the same text without "served because".
        text_ = pull.message or (pull.warning or "").split(" (served because", 1)[0]
        return Verdict(pull.stage, (("retired", text_),), replacement=pull.replacement)
    if pull.stage == "deprecated":
        warning = pull.warning
    elif pull.stage != "approved":
        failures.append(("stage", f"{repo}@{digest} is {pull.stage}, not approved in Hallmark's catalog"))
    if rules.require_signature:
        failure = _signature(pipeline, r, repo, digest)
        if failure:
            failures.append(("signature", failure))
    if rules.min_grade or rules.max_severity:
        row = r.one(IMAGE_SQL, repo=repo, digest=digest)
        if rules.min_grade:
            failures.extend(_grade(row, rules.min_grade))
        if rules.max_severity:
            failures.extend(_severity(row, rules.max_severity))
    return Verdict(pull.stage, tuple(failures), warning, pull.replacement)


def _signature(pipeline: Pipeline, r: Reader, repo: str, digest: str) -> str | None:
    """None when a valid enterprise signature is on record or verifies now (the outcome is stored)."""
    row = r.one(VERIFIED_SQL, repo=repo, digest=digest)
    if row is not None and bool(row[0]):
        return None
    from hallmark.signing.errors import PolicyError
    from hallmark.signing.service import NotFound, verify_image

    try:
        result = verify_image(pipeline, repo, digest)
    except PolicyError as exc:
        return f"no valid enterprise signature can be checked: {exc}"
    except NotFound:
        return f"{repo}@{digest} is not in Hallmark"
    if result.get("passed"):
        return None
    return f"no valid enterprise signature under the trust policy ({result.get('error') or 'verification failed'})"


def _grade(row: tuple[Any, ...] | None, minimum: str) -> list[tuple[str, str]]:
    grade = str(row[1]) if row is not None and row[1] else None
    if grade not in GRADE_ORDER:
        why = "it has no health grade yet" if grade is None else f"its health grade is {grade}"
        return [("grade", f"{why}; at least {minimum} is required")]
    if GRADE_ORDER.index(grade) > GRADE_ORDER.index(minimum):
        return [("grade", f"health grade {grade} is below the required {minimum}")]
    return []


def _severity(row: tuple[Any, ...] | None, limit: str) -> list[tuple[str, str]]:
    if row is None or row[0] != "done" or not row[2]:
        return [("severity", f"not scanned yet, so findings at or above {limit} cannot be ruled out")]
    try:
        summary = orjson.loads(row[2])
    except orjson.JSONDecodeError:
        return [("severity", "its scan summary is unreadable; rescan it")]
    over = at_or_above(of_summary(summary), limit)
    if not over:
        return []
    total: dict[str, int] = {}
    for counts in over.values():
        for sev, n in counts.items():
            total[sev] = total.get(sev, 0) + n
    counts_text = ", ".join(f"{s}: {n}" for s, n in total.items())
    return [("severity", f"{sum(total.values())} unsuppressed finding(s) at or above {limit} ({counts_text})")]
