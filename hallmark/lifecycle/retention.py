"""Retention policies: which tags of a repository are removed to keep it tidy.

A policy (``lifecycle_settings.retention``, JSON, on a repository or a namespace; the repository's
own wins, then the innermost namespace's) has keep rules and an optional scope:

- ``keep_last``: the N most recently pushed tags (of those considered) are kept;
- ``keep_days``: tags pushed within D days are kept;
- ``keep``: tags matching one of these patterns are kept;
- ``consider``: only tags matching one of these patterns are subject to the policy (default: all).

Patterns are shell-style globs (``v*``, ``release-[0-9]*``, ``pr-?``), matched against the whole tag.
A considered tag goes only when no rule keeps it, and never when its image is ``approved`` in the
catalog or also carries a tag that is kept (an image is never removed from under a kept tag).
A policy that keeps nothing, or that would remove every tag of a repository, is refused unless
it says ``force``. Removals go through the tag history (``retention``), so they can be restored
within the time-machine window; the manifests themselves go later, with garbage collection.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from hallmark.catalog.tables import catalog_entries
from hallmark.config import Config
from hallmark.lifecycle.durations import format_duration
from hallmark.lifecycle.tags import LIFECYCLE_ACTOR, ScopeSettings, default_expiry, set_scope_values, time_machine
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import repositories, tags

MAX_PATTERNS = 50


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_last: int | None = Field(default=None, ge=0, le=1_000_000)
    keep_days: float | None = Field(default=None, ge=0, le=36_500)
    keep: list[str] = Field(default_factory=list, max_length=MAX_PATTERNS)
    consider: list[str] = Field(default_factory=list, max_length=MAX_PATTERNS)
    force: bool = False  # accept a policy that keeps nothing or would empty a repository

    @field_validator("keep", "consider")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p or len(p) > 128 or any(c.isspace() for c in p):
                raise ValueError(f"{p[:40]!r} is not a tag pattern (a glob of up to 128 characters, no spaces)")
        return v

    def keeps_something(self) -> bool:
        """False for a policy with no keep rule and no scope: it would remove every tag."""
        return bool(self.keep_last or self.keep_days or self.keep or self.consider)


class PolicyRefused(ValueError):
    """A policy that would delete everything (and does not say ``force``)."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


@dataclass
class TagDecision:
    tag: str
    digest: str
    pushed: dt.datetime
    keep: bool
    why: str


@dataclass
class RepoPlan:
    repository: str
    policy_from: str | None
    policy: RetentionPolicy | None
    decisions: list[TagDecision] = field(default_factory=list)
    refused: str | None = None  # why nothing is removed although the policy would
    removed: list[str] = field(default_factory=list)  # tags actually removed (not dry-run)

    @property
    def remove(self) -> list[TagDecision]:
        return [d for d in self.decisions if not d.keep]

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "policy_from": self.policy_from,
            "policy": self.policy.model_dump() if self.policy else None,
            "refused": self.refused,
            "remove": [_decision(d) for d in self.remove],
            "keep": [_decision(d) for d in self.decisions if d.keep],
            "removed": self.removed,
        }


def _decision(d: TagDecision) -> dict[str, Any]:
    return {"tag": d.tag, "digest": d.digest, "pushed": d.pushed, "why": d.why}


def parse_policy(raw: str | None) -> RetentionPolicy | None:
    if not raw:
        return None
    return RetentionPolicy.model_validate_json(raw)


def _match(tag: str, patterns: Iterable[str]) -> str | None:
    for p in patterns:
        if fnmatch.fnmatchcase(tag, p):
            return p
    return None


def decide(
    policy: RetentionPolicy,
    rows: list[tuple[str, str, dt.datetime]],
    approved: set[str],
    now: dt.datetime,
) -> list[TagDecision]:
    """Keep or remove each tag (``rows``: tag, digest, last push), with the reason, newest first."""
    rows = sorted(rows, key=lambda r: (r[2], r[0]), reverse=True)
    out: list[TagDecision] = []
    rank = 0
    young = now - dt.timedelta(days=policy.keep_days) if policy.keep_days else None
    for tag, digest, pushed in rows:
        if policy.consider and _match(tag, policy.consider) is None:
            out.append(TagDecision(tag, digest, pushed, True, "not considered: matches no consider pattern"))
            continue
        rank += 1
        reasons = []
        pattern = _match(tag, policy.keep)
        if pattern is not None:
            reasons.append(f"matches keep pattern {pattern!r}")
        if policy.keep_last and rank <= policy.keep_last:
            reasons.append(f"among the last {policy.keep_last} pushed")
        if young is not None and pushed >= young:
            reasons.append(f"pushed within {policy.keep_days:g} days")
        if digest in approved:
            reasons.append("image approved in the catalog")
        out.append(TagDecision(tag, digest, pushed, bool(reasons), "; ".join(reasons)))
    kept_by = {d.digest: d.tag for d in out if d.keep}
    for d in out:
        if d.keep:
            continue
        if d.digest in kept_by:
            d.keep, d.why = True, f"image also tagged {kept_by[d.digest]!r}, which is kept"
            continue
        why = []
        if policy.keep_last:
            why.append(f"not among the last {policy.keep_last} pushed")
        if policy.keep_days:
            why.append(f"pushed {max((now - d.pushed).days, 0)} days ago (more than {policy.keep_days:g})")
        if policy.keep:
            why.append("matches no keep pattern")
        d.why = "; ".join(why) or "the policy keeps no tag"
    return out


def _tag_rows(meta: MetadataStore, repo: str) -> list[tuple[str, str, dt.datetime]]:
    q = (
        select(tags.c.name, tags.c.digest, tags.c.updated_at)
        .select_from(tags.join(repositories))
        .where(repositories.c.name == repo)
    )
    with meta.engine.connect() as conn:
        return [(str(t), str(d), u if u.tzinfo else u.replace(tzinfo=dt.UTC)) for t, d, u in conn.execute(q)]


def _approved(meta: MetadataStore, repo: str) -> set[str]:
    q = select(catalog_entries.c.digest).where(
        catalog_entries.c.repo_name == repo, catalog_entries.c.stage == "approved"
    )
    with meta.engine.connect() as conn:
        return {str(d) for d in conn.execute(q).scalars()}


def plan_repo(
    meta: MetadataStore,
    repo: str,
    policy: RetentionPolicy | None,
    policy_from: str | None,
    now: dt.datetime | None = None,
) -> RepoPlan:
    """What the policy keeps and removes in ``repo`` now, and why (``refused`` when it may not)."""
    plan = RepoPlan(repo, policy_from, policy)
    if policy is None:
        return plan
    rows = _tag_rows(meta, repo)
    plan.decisions = decide(policy, rows, _approved(meta, repo), now or utcnow())
    if not plan.remove:
        return plan
    info = meta.repository_info(repo)
    if info is not None and info["immutable_tags"]:
        plan.refused = "the repository's tags are immutable"
    elif not policy.force and all(not d.keep for d in plan.decisions):
        plan.refused = "the policy would remove every tag of the repository (set force to allow it)"
    return plan


def effective_policy(settings: ScopeSettings, repo: str) -> tuple[RetentionPolicy | None, str | None]:
    raw, scope = settings.value(repo, "retention")
    return parse_policy(raw), scope


def run(
    meta: MetadataStore,
    config: Config,
    dry_run: bool = False,
    repository: str | None = None,
    actor: str = LIFECYCLE_ACTOR,
    now: dt.datetime | None = None,
) -> list[RepoPlan]:
    """Apply every repository's policy (or say what it would do with ``dry_run``).

    A tag is removed only while it still points at the image the decision was about.
    """
    settings = ScopeSettings.load(meta)
    if not settings.any_set("retention"):
        return []
    now = now or utcnow()
    names = [repository] if repository else meta.list_repositories()
    plans = []
    for repo in names:
        policy, scope = effective_policy(settings, repo)
        if policy is None:
            continue
        plan = plan_repo(meta, repo, policy, scope, now)
        if not dry_run and plan.refused is None:
            for d in plan.remove:
                if meta.delete_tag(repo, d.tag, actor, "retention", expect=d.digest):
                    plan.removed.append(d.tag)
        plans.append(plan)
    return plans


# -- settings ---------------------------------------------------------------------------------------
def repositories_in(meta: MetadataStore, namespace: str) -> list[str]:
    return [r for r in meta.list_repositories() if r.startswith(namespace + "/")]


def check_policy(meta: MetadataStore, kind: str, scope: str, policy: RetentionPolicy) -> None:
    """Refuse (PolicyRefused) a policy that keeps nothing, or would remove every tag of a
    repository it applies to, unless it says ``force``."""
    if policy.force:
        return
    if not policy.keeps_something():
        raise PolicyRefused("the policy keeps no tag: it would remove every tag (set force to allow it)")
    settings = ScopeSettings.load(meta)
    targets = [scope] if kind == "repository" else repositories_in(meta, scope)
    emptied = []
    for repo in targets:
        own_scope = settings.value(repo, "retention")[1]
        if kind == "namespace" and own_scope and _inner(own_scope, scope):
            continue  # a policy of its own (or of an inner namespace) wins there
        plan = plan_repo(meta, repo, policy, f"{kind} {scope}")
        if plan.decisions and all(not d.keep for d in plan.decisions):
            emptied.append(repo)
    if emptied:
        raise PolicyRefused(
            "the policy would remove every tag of " + ", ".join(emptied[:20]) + " (set force to allow it)",
            {"repositories": emptied},
        )


def _inner(source: str, namespace: str) -> bool:
    kind, _, name = source.partition(" ")
    return kind == "repository" or (name != namespace and name.startswith(namespace + "/"))


def scope_document(meta: MetadataStore, config: Config, kind: str, scope: str) -> dict[str, Any]:
    """A namespace's or repository's own retention, expiry and time-machine settings, what applies
    (and from where), and for a repository what the policy would remove now."""
    settings = ScopeSettings.load(meta)
    own = settings.rows.get((kind, scope)) or {}
    probe = scope if kind == "repository" else f"{scope}/-"  # what a repository directly inside gets
    policy, policy_from = effective_policy(settings, probe)
    expiry, expiry_from = default_expiry(config, settings, probe)
    window, window_from = time_machine(config, settings, probe)

    def seconds(v: Any) -> str | None:
        return None if v is None else format_duration(int(v))

    doc: dict[str, Any] = {
        "scope": {"kind": kind, "name": scope},
        "own": {
            "policy": orjson.loads(own["retention"]) if own.get("retention") else None,
            "tag_expiry": seconds(own.get("tag_expiry_seconds")),
            "time_machine": seconds(own.get("time_machine_seconds")),
        },
        "effective": {
            "policy": policy.model_dump() if policy else None,
            "policy_from": policy_from,
            "tag_expiry": format_duration(expiry) if expiry else None,
            "tag_expiry_from": expiry_from,
            "time_machine": format_duration(int(window.total_seconds())),
            "time_machine_from": window_from,
        },
    }
    if kind == "repository":
        doc["plan"] = plan_repo(meta, scope, policy, policy_from).as_dict()
    return doc


def set_settings(meta: MetadataStore, kind: str, scope: str, values: dict[str, Any]) -> None:
    """Store ``policy`` (a RetentionPolicy or None), ``tag_expiry`` and ``time_machine`` (seconds or
    None) for a namespace or repository; keys not given are left as they are."""
    cols: dict[str, Any] = {}
    if "policy" in values:
        p = values["policy"]
        if p is not None:
            check_policy(meta, kind, scope, p)
        cols["retention"] = p.model_dump_json() if p is not None else None
    if "tag_expiry" in values:
        cols["tag_expiry_seconds"] = values["tag_expiry"]
    if "time_machine" in values:
        cols["time_machine_seconds"] = values["time_machine"]
    if cols:
        set_scope_values(meta, kind, scope, cols)
