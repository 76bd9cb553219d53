"""Tag history (Quay's "time machine"), restore, and tag expiration.

- Every creation, move and removal of a tag is a ``tag_history`` row, written by
  :class:`~hallmark.metadata.store.MetadataStore` in the transaction that changes the tag.
- A tag can be moved back to a digest it held within its repository's time-machine window
  (``lifecycle_settings.time_machine_seconds`` of the repository, else of its innermost namespace
  with one, else ``[lifecycle] time_machine_days``) while the manifest exists; garbage collection
  keeps manifests that a tag left less than a window ago (:func:`gc_policy`).
- Tags expire from the image config label ``hallmark.expires-after`` or ``quay.expires-after``
  (read when the pipeline indexes the image: it reads the config anyway; one due time per tag in
  ``tag_expirations``), or after the repository's default (``tag_expiry_seconds``, else
  ``[lifecycle] tag_expiry_default``) counted from the tag's last push. The periodic job
  ``tags.expire`` removes them, recorded as ``expire`` by ``lifecycle``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError

from hallmark.catalog.tables import catalog_entries
from hallmark.config import Config
from hallmark.lifecycle.durations import format_duration, parse_duration
from hallmark.lifecycle.tables import lifecycle_settings, tag_expirations, tag_history
from hallmark.metadata.history import TagChange
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import manifests, repositories, tags
from hallmark.registry.gc import ManifestPolicy
from hallmark.registry.manifests import IMAGE_TYPES

log = logging.getLogger(__name__)

LIFECYCLE_ACTOR = "lifecycle"
# Both are honoured; Hallmark's own wins when an image carries both.
EXPIRY_LABELS = ("hallmark.expires-after", "quay.expires-after")
MAX_CONFIG_READ = 8 << 20
# Catalog stages whose images garbage collection keeps even once no tag holds them.
PROTECTED_STAGES = ("approved", "deprecated")


# -- settings per repository / namespace -------------------------------------------------------------
def namespaces_of(repo: str) -> list[str]:
    """Every namespace that contains ``repo``, innermost first (``a/b/c`` -> ``a/b``, ``a``)."""
    parts = repo.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


class ScopeSettings:
    """``lifecycle_settings`` rows, resolved per repository: its own value wins, then the innermost
    namespace's. Load once per job (:meth:`load`) or for one repository (:meth:`for_repo`)."""

    def __init__(self, rows: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        self.rows = rows

    @classmethod
    def load(cls, meta: MetadataStore, where: Any = None) -> ScopeSettings:
        q = select(lifecycle_settings)
        if where is not None:
            q = q.where(where)
        with meta.engine.connect() as conn:
            rows = {(str(r["scope_kind"]), str(r["scope"])): dict(r) for r in conn.execute(q).mappings()}
        return cls(rows)

    @classmethod
    def for_repo(cls, meta: MetadataStore, repo: str) -> ScopeSettings:
        t = lifecycle_settings.c
        return cls.load(
            meta,
            or_(
                and_(t.scope_kind == "repository", t.scope == repo),
                and_(t.scope_kind == "namespace", t.scope.in_(namespaces_of(repo))),
            ),
        )

    def value(self, repo: str, column: str) -> tuple[Any, str | None]:
        """(value, "repository x" / "namespace y" that set it), or (None, None) when none does."""
        for key in [("repository", repo)] + [("namespace", ns) for ns in namespaces_of(repo)]:
            row = self.rows.get(key)
            if row is not None and row.get(column) is not None:
                return row[column], f"{key[0]} {key[1]}"
        return None, None

    def any_set(self, column: str) -> bool:
        return any(r.get(column) is not None for r in self.rows.values())


def time_machine(config: Config, settings: ScopeSettings, repo: str) -> tuple[dt.timedelta, str]:
    """The repository's time-machine window and where it comes from."""
    seconds, scope = settings.value(repo, "time_machine_seconds")
    if seconds is not None:
        return dt.timedelta(seconds=int(seconds)), scope or "default"
    return dt.timedelta(days=config.lifecycle.time_machine_days), "[lifecycle] time_machine_days"


def default_expiry(config: Config, settings: ScopeSettings, repo: str) -> tuple[int | None, str]:
    """Seconds after its last push that a tag without an expiry label lives (None: forever)."""
    seconds, scope = settings.value(repo, "tag_expiry_seconds")
    if seconds is not None:
        return (int(seconds) or None), scope or "default"
    raw = config.lifecycle.tag_expiry_default
    if not raw:
        return None, "default"
    try:
        return parse_duration(raw), "[lifecycle] tag_expiry_default"
    except ValueError:
        log.warning("[lifecycle] tag_expiry_default %r ignored: not a duration", raw)
        return None, "default"


def set_scope_values(meta: MetadataStore, kind: str, scope: str, values: Mapping[str, Any]) -> None:
    """Set some columns of a namespace's or repository's settings row, leaving the others as they are."""
    if kind not in ("namespace", "repository"):
        raise ValueError("scope kind must be namespace or repository")
    t = lifecycle_settings.c
    key = and_(t.scope_kind == kind, t.scope == scope)
    for _ in range(2):
        try:
            with meta.transaction() as conn:
                if conn.execute(select(t.scope).where(key)).first() is not None:
                    conn.execute(lifecycle_settings.update().where(key).values(**values, updated_at=utcnow()))
                elif any(v is not None for v in values.values()):
                    conn.execute(
                        lifecycle_settings.insert().values(scope_kind=kind, scope=scope, **values, updated_at=utcnow())
                    )
            return
        except IntegrityError:  # created concurrently: update it on the next pass
            continue
    raise RuntimeError(f"could not store the lifecycle settings of {kind} {scope}")


# -- history and restore --------------------------------------------------------------------------------
def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def current_digest(meta: MetadataStore, repo: str, tag: str) -> str | None:
    q = (
        select(tags.c.digest)
        .select_from(tags.join(repositories))
        .where(repositories.c.name == repo, tags.c.name == tag)
    )
    with meta.engine.connect() as conn:
        value = conn.execute(q).scalar()
    return str(value) if value is not None else None


def history(meta: MetadataStore, config: Config, repo: str, tag: str, limit: int = 200) -> dict[str, Any]:
    """The tag's history, newest first, and the digests it can be restored to now.

    ``restorable``: digests the tag held within the window, other than the current one, whose
    manifest still exists, with the last time the tag held each and until when it can come back.
    """
    h = tag_history.c
    with meta.engine.connect() as conn:
        rows = conn.execute(
            select(tag_history)
            .where(h.repo_name == repo, h.tag == tag)
            .order_by(h.created_at.desc(), h.id.desc())
            .limit(limit)
        ).mappings()
        entries = [
            {
                "tag": r["tag"],
                "old_digest": r["old_digest"],
                "new_digest": r["new_digest"],
                "action": r["action"],
                "actor": r["actor"],
                "at": _utc(r["created_at"]),
            }
            for r in rows
        ]
    current = current_digest(meta, repo, tag)
    window, source = time_machine(config, ScopeSettings.for_repo(meta, repo), repo)
    since = utcnow() - window
    held: dict[str, dt.datetime] = {}
    for e in entries:
        for d in (e["old_digest"], e["new_digest"]):
            if d and d != current and d not in held:
                held[d] = e["at"]
    existing = _existing(meta, repo, [d for d, at in held.items() if at >= since])
    restorable = [
        {"digest": d, "last_held": at, "restorable_until": at + window}
        for d, at in held.items()
        if at >= since and d in existing
    ]
    return {
        "repository": repo,
        "tag": tag,
        "current": current,
        "time_machine": {"seconds": int(window.total_seconds()), "from": source},
        "restorable": restorable,
        "entries": entries,
    }


def _existing(meta: MetadataStore, repo: str, digests: list[str]) -> set[str]:
    if not digests:
        return set()
    q = (
        select(manifests.c.digest)
        .select_from(manifests.join(repositories))
        .where(repositories.c.name == repo, manifests.c.digest.in_(digests))
    )
    with meta.engine.connect() as conn:
        return {str(d) for d in conn.execute(q).scalars()}


def restore(meta: MetadataStore, config: Config, repo: str, tag: str, digest: str, actor: str) -> TagChange:
    """Move ``tag`` back to ``digest``: it must have held it within the window and the manifest must
    exist (TagRestoreRefused otherwise; nothing changes). Recorded as ``restore`` by ``actor``."""
    window, _ = time_machine(config, ScopeSettings.for_repo(meta, repo), repo)
    since = utcnow() - window
    try:
        return meta.restore_tag(repo, tag, digest, since, actor)
    except IntegrityError:  # the tag was created concurrently: check and move it again
        return meta.restore_tag(repo, tag, digest, since, actor)


# -- expiration ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelExpiry:
    """What an image's config labels say about expiry: a duration, or a warning for a bad value."""

    label: str
    value: str
    seconds: int | None
    warning: str | None = None

    @property
    def source(self) -> str:
        return f"label {self.label}={self.value}"[:64]


def label_expiry(config_json: bytes) -> LabelExpiry | None:
    """The expiry label of an image config (None without one). A malformed value gives a warning,
    never an error: the label is ignored and the image indexed as usual."""
    try:
        doc = orjson.loads(config_json)
    except orjson.JSONDecodeError:
        return None
    inner = doc.get("config") if isinstance(doc, dict) else None
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    if not isinstance(labels, dict):
        return None
    for name in EXPIRY_LABELS:
        if name not in labels:
            continue
        raw = labels[name]
        value = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
        try:
            if not isinstance(raw, str):
                raise ValueError(f"{value[:40]} is not a duration like 90s, 30m, 12h, 2d or 3w")
            return LabelExpiry(name, value[:200], parse_duration(raw))
        except ValueError as exc:
            return LabelExpiry(name, value[:200], None, f"label {name} ignored: {exc}")
    return None


def _tags_on(meta: MetadataStore, repo: str, digest: str) -> list[tuple[str, dt.datetime]]:
    q = (
        select(tags.c.name, tags.c.updated_at)
        .select_from(tags.join(repositories))
        .where(repositories.c.name == repo, tags.c.digest == digest)
        .order_by(tags.c.name)
    )
    with meta.engine.connect() as conn:
        return [(str(n), _utc(u)) for n, u in conn.execute(q)]


def apply_label_expiry(meta: MetadataStore, repo: str, digest: str, config_json: bytes) -> LabelExpiry | None:
    """Give every tag on this image the due time its expiry label asks for (from the tag's push).

    Called when the pipeline indexes the image (every push of a tag queues that), so a tag moved
    onto an image with the label gets it. A malformed label changes nothing (see :func:`label_expiry`).
    """
    found = label_expiry(config_json)
    if found is None or found.seconds is None:
        return found
    held = _tags_on(meta, repo, digest)
    if not held:
        return found
    e = tag_expirations.c
    with meta.transaction() as conn:
        for tag, pushed in held:
            conn.execute(delete(tag_expirations).where(e.repo_name == repo, e.tag == tag))
            conn.execute(
                tag_expirations.insert().values(
                    repo_name=repo,
                    tag=tag,
                    digest=digest,
                    expires_at=pushed + dt.timedelta(seconds=found.seconds),
                    source=found.source,
                )
            )
    return found


def expire_tags(meta: MetadataStore, config: Config, now: dt.datetime | None = None) -> dict[str, Any]:
    """The ``tags.expire`` job: remove tags whose label due time or repository default has passed.

    A tag is removed only while it still points at the image that gave it its due time; due
    times of tags that moved on are dropped. Repositories with immutable tags are left alone.
    """
    now = now or utcnow()
    expired: list[str] = []
    e = tag_expirations.c
    with meta.engine.connect() as conn:
        due = [dict(r) for r in conn.execute(select(tag_expirations).where(e.expires_at <= now)).mappings()]
    immutable = _immutable_repos(meta)
    for row in due:
        repo, tag, digest = row["repo_name"], row["tag"], row["digest"]
        if repo in immutable:
            continue
        if meta.delete_tag(repo, tag, LIFECYCLE_ACTOR, "expire", expect=digest):
            expired.append(f"{repo}:{tag}@{digest} ({row['source']})")
        with meta.transaction() as conn:
            conn.execute(delete(tag_expirations).where(e.repo_name == repo, e.tag == tag, e.digest == digest))
    settings = ScopeSettings.load(meta)
    if config.lifecycle.tag_expiry_default or settings.any_set("tag_expiry_seconds"):
        for repo in meta.list_repositories():
            if repo in immutable:
                continue
            seconds, source = default_expiry(config, settings, repo)
            if not seconds:
                continue
            for tag, digest in _stale_tags(meta, repo, now - dt.timedelta(seconds=seconds)):
                if meta.delete_tag(repo, tag, LIFECYCLE_ACTOR, "expire", expect=digest):
                    expired.append(f"{repo}:{tag}@{digest} (default {format_duration(seconds)} from {source})")
    return {"expired": expired}


def _immutable_repos(meta: MetadataStore) -> set[str]:
    with meta.engine.connect() as conn:
        q = select(repositories.c.name).where(repositories.c.immutable_tags.is_(True))
        return {str(n) for n in conn.execute(q).scalars()}


def _stale_tags(meta: MetadataStore, repo: str, pushed_before: dt.datetime) -> list[tuple[str, str]]:
    """Tags last pushed before the cutoff that no expiry label governs (a label wins over the default)."""
    e = tag_expirations.c
    q = (
        select(tags.c.name, tags.c.digest)
        .select_from(tags.join(repositories))
        .where(
            repositories.c.name == repo,
            tags.c.updated_at < pushed_before,
            ~select(e.tag).where(e.repo_name == repo, e.tag == tags.c.name, e.digest == tags.c.digest).exists(),
        )
        .order_by(tags.c.name)
    )
    with meta.engine.connect() as conn:
        return [(str(t), str(d)) for t, d in conn.execute(q)]


def image_expiration(meta: MetadataStore, blobs: Any, config: Config, repo: str, digest: str) -> dict[str, Any]:
    """For the image document: the expiry label (or the warning about a malformed one) and when
    each tag on the image expires, and why."""
    out: dict[str, Any] = {}
    found = _label_of(meta, blobs, repo, digest)
    if found is not None:
        out["label"] = {"name": found.label, "value": found.value, "seconds": found.seconds}
        if found.warning:
            out["warning"] = found.warning
    e = tag_expirations.c
    with meta.engine.connect() as conn:
        rows = {
            str(r["tag"]): r
            for r in conn.execute(select(tag_expirations).where(e.repo_name == repo, e.digest == digest)).mappings()
        }
    default, source = default_expiry(config, ScopeSettings.for_repo(meta, repo), repo)
    per_tag = []
    for tag, pushed in _tags_on(meta, repo, digest):
        if tag in rows:
            per_tag.append({"tag": tag, "expires_at": _utc(rows[tag]["expires_at"]), "source": rows[tag]["source"]})
        elif found is not None and found.seconds is not None:  # indexing has not recorded it yet
            when = pushed + dt.timedelta(seconds=found.seconds)
            per_tag.append({"tag": tag, "expires_at": when, "source": found.source})
        elif default:
            when = pushed + dt.timedelta(seconds=default)
            per_tag.append({"tag": tag, "expires_at": when, "source": f"default {format_duration(default)} ({source})"})
    out["tags"] = per_tag
    return out


def _label_of(meta: MetadataStore, blobs: Any, repo: str, digest: str) -> LabelExpiry | None:
    rec = meta.get_manifest(repo, digest, True)
    if rec is None or rec.media_type not in IMAGE_TYPES:
        return None
    try:
        cfg = orjson.loads(rec.content).get("config") or {}
        config_digest = str(cfg["digest"])
        if (blobs.stat(config_digest) or 0) > MAX_CONFIG_READ:
            return None
        with blobs.open(config_digest) as f:
            return label_expiry(f.read(MAX_CONFIG_READ))
    except (KeyError, TypeError, AttributeError, OSError, orjson.JSONDecodeError):
        return None


# -- garbage collection ----------------------------------------------------------------------------------
def gc_policy(meta: MetadataStore, config: Config) -> ManifestPolicy:
    """What garbage collection may take: manifests a tag left more than the repository's window
    ago, except images approved or deprecated in the catalog (deployments pin those by digest)."""
    settings = ScopeSettings.load(meta)
    with meta.engine.connect() as conn:
        q = select(catalog_entries.c.repo_name, catalog_entries.c.digest).where(
            catalog_entries.c.stage.in_(PROTECTED_STAGES)
        )
        protected = {(str(r), str(d)) for r, d in conn.execute(q)}
    return ManifestPolicy(
        window=lambda repo: time_machine(config, settings, repo)[0],
        protected=lambda repo, digest: (repo, digest) in protected,
    )


def forget(items: Iterable[tuple[str, str]], on_delete: Any) -> None:
    """Tell the pipeline about manifests garbage collection removed (drops their image rows)."""
    for repo, digest in items:
        try:
            on_delete(repo, digest)
        except Exception:
            log.exception("forgetting %s@%s failed", repo, digest)
