"""Mirror definitions: validation, tag and platform filters, schedules, and the sealed source password.

A definition names a source (registry + repository), a destination repository, which tags to take
(glob patterns, or regular expressions written ``regex:...``, as include and exclude lists), which
platforms of an index to keep, when to run (``interval_seconds`` or a ``cron`` expression), whether
to copy referrers, the robot the mirror acts as, and (push mirrors) whether what it pushed is
deleted from the remote once retired or deleted here (``delete_remote``). The source password is
sealed with AES-GCM under a key in the data folder, so a copy of the database alone does not hold
it; it is never logged nor returned (answers say ``has_password``).
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import re2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select, update

from hallmark.metadata import secrets as instance_secrets
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.mirror.tables import mirror_run_tags, mirror_runs, mirrors
from hallmark.oci.source import OciError, Platform
from hallmark.registry.names import valid_name

MIN_INTERVAL_SECONDS = 60
DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
REGEX_PREFIX = "regex:"
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class MirrorInputError(ValueError):
    """A definition that cannot be stored, with a message for the user."""


@dataclass(frozen=True)
class TagFilter:
    """Include (none: every tag) and exclude patterns; glob by default, ``regex:`` for RE2 full matches."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, include: list[Any] | None, exclude: list[Any] | None) -> TagFilter:
        lists = []
        for what, items in (("include", include), ("exclude", exclude)):
            if items is None:
                items = []
            if not isinstance(items, list) or not all(isinstance(p, str) and p for p in items):
                raise MirrorInputError(f"tags {what} must be a list of patterns")
            for p in items:
                if p.startswith(REGEX_PREFIX):
                    try:
                        re2.compile(p[len(REGEX_PREFIX) :])
                    except re2.error as exc:
                        raise MirrorInputError(f"invalid regular expression {p!r}: {exc}") from exc
            lists.append(tuple(items))
        return cls(lists[0], lists[1])

    @staticmethod
    def _hit(pattern: str, tag: str) -> bool:
        if pattern.startswith(REGEX_PREFIX):
            return re2.fullmatch(pattern[len(REGEX_PREFIX) :], tag) is not None
        return fnmatch.fnmatchcase(tag, pattern)

    def wants(self, tag: str) -> bool:
        if self.include and not any(self._hit(p, tag) for p in self.include):
            return False
        return not any(self._hit(p, tag) for p in self.exclude)


def next_run(interval_seconds: int | None, cron: str | None, after: dt.datetime) -> dt.datetime | None:
    """When a schedule fires next after ``after`` (None: manual runs only)."""
    if cron:
        from croniter import croniter

        nxt: dt.datetime = croniter(cron, after).get_next(dt.datetime)
        return nxt
    if interval_seconds:
        return after + dt.timedelta(seconds=interval_seconds)
    return None


def check_cron(expr: str) -> None:
    from croniter import croniter

    if not croniter.is_valid(expr):
        raise MirrorInputError(f"invalid cron expression {expr!r}")


@dataclass
class Mirror:
    id: int
    name: str
    source_registry: str
    source_repository: str
    destination: str
    insecure: bool
    username: str | None
    has_password: bool
    tags: TagFilter
    platforms: list[str] | None
    interval_seconds: int | None
    cron: str | None
    copy_referrers: bool
    robot: str | None
    timeout_seconds: float
    enabled: bool
    next_run_at: dt.datetime | None
    created_by: str
    created_at: dt.datetime
    sealed: str | None = field(default=None, repr=False)
    direction: str = "pull"  # push: ``destination`` is local, ``source_*`` name the remote target
    delete_remote: bool = False  # push: retired or locally deleted images leave the remote too

    @property
    def source(self) -> str:
        return f"{self.source_registry}/{self.source_repository}"

    @property
    def push(self) -> bool:
        return self.direction == "push"

    def platform_filter(self) -> list[Platform] | None:
        return [Platform.parse(p) for p in self.platforms] if self.platforms else None

    def to_json(self) -> dict[str, Any]:
        """The API form: the password is never included, only whether one is stored."""
        return {
            "id": self.id,
            "name": self.name,
            "source_registry": self.source_registry,
            "source_repository": self.source_repository,
            "source": self.source,
            "destination": self.destination,
            "insecure": self.insecure,
            "username": self.username,
            "has_password": self.has_password,
            "tags": {"include": list(self.tags.include), "exclude": list(self.tags.exclude)},
            "platforms": self.platforms,
            "schedule": {"interval_seconds": self.interval_seconds, "cron": self.cron},
            "copy_referrers": self.copy_referrers,
            "delete_remote": self.delete_remote,
            "robot": self.robot,
            "timeout_seconds": self.timeout_seconds,
            "enabled": self.enabled,
            "next_run_at": self.next_run_at.isoformat() if self.next_run_at else None,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "direction": self.direction,
        } | (
            {
                "repository": self.destination,
                "remote_registry": self.source_registry,
                "remote_repository": self.source_repository,
                "remote": self.source,
            }
            if self.push
            else {}
        )


class SecretBox:
    """AES-GCM with a 256-bit key that is an instance secret in the database (``mirror-key``), so
    every replica and worker opens what another sealed; an installation from before imports its
    old ``<data>/mirror/secret-key`` once.

    The key is read when the box is made: sealing happens inside write transactions, where
    creating the row (behind the SQLite writer lock) would wait for itself.
    """

    def __init__(self, meta: MetadataStore, data_path: Path) -> None:
        text = instance_secrets.get_or_create(
            meta,
            instance_secrets.MIRROR_KEY,
            lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
            data_path / "mirror" / "secret-key",
        )
        self._secret = base64.b64decode(text.strip())

    def _key(self) -> bytes:
        return self._secret

    def seal(self, text: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + AESGCM(self._key()).encrypt(nonce, text.encode(), b"mirror")).decode()

    def open(self, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        return AESGCM(self._key()).decrypt(raw[:12], raw[12:], b"mirror").decode()


def _opt_str(doc: dict[str, Any], key: str, limit: int = 255) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise MirrorInputError(f"{key} must be a string of at most {limit} characters")
    return value


def validate(doc: dict[str, Any]) -> dict[str, Any]:
    """The row values for a definition from an API/CLI document; MirrorInputError on bad input.

    ``source`` (``host/repository``) may stand for ``source_registry`` + ``source_repository``;
    a push mirror (``direction: "push"``) names its remote target ``remote`` (or ``remote_registry`` +
    ``remote_repository``, stored in the source columns) and its local repository ``destination``
    (or ``repository``);
    ``tags`` is ``{"include": [...], "exclude": [...]}``; ``schedule`` is ``{"interval_seconds": N}``
    or ``{"cron": "..."}`` (the flat keys work too); ``delete_remote`` is refused on pull mirrors,
    which have no remote to clean.
    """
    direction = doc.get("direction") or "pull"
    if direction not in ("pull", "push"):
        raise MirrorInputError("direction must be 'pull' or 'push'")
    doc = dict(doc)
    if direction == "push":
        for remote_key, source_key in (
            ("remote", "source"),
            ("remote_registry", "source_registry"),
            ("remote_repository", "source_repository"),
        ):
            if doc.get(remote_key) is not None:
                doc[source_key] = doc[remote_key]
        if not doc.get("destination") and doc.get("repository"):
            doc["destination"] = doc["repository"]
    what = "remote" if direction == "push" else "source"
    registry = _opt_str(doc, "source_registry")
    repository = _opt_str(doc, "source_repository")
    source = _opt_str(doc, "source", 512)
    insecure_default = False
    if source and not (registry or repository):
        scheme, sep, rest = source.partition("://")
        if sep:
            if scheme not in ("http", "https"):
                raise MirrorInputError(f"{what} must be HOST/REPOSITORY (or https://HOST/REPOSITORY)")
            source, insecure_default = rest, scheme == "http"
        registry, _, repository = source.partition("/")
    if registry in DOCKER_HUB_ALIASES:
        registry = "registry-1.docker.io"  # where Docker Hub's API answers
        if repository and "/" not in repository:
            repository = f"library/{repository}"
    if not registry or not _HOST_RE.fullmatch(registry):
        raise MirrorInputError(f"{what}_registry must be a registry host[:port]")
    if not repository or not valid_name(repository):
        raise MirrorInputError(f"{what}_repository must be a repository name")
    destination = _opt_str(doc, "destination")
    if not destination or not valid_name(destination):
        raise MirrorInputError(
            "repository (the local one to push) must be a repository name"
            if direction == "push"
            else "destination must be a repository name"
        )
    default_name = ("push-" if direction == "push" else "") + destination.replace("/", "-")
    name = _opt_str(doc, "name", 128) or default_name[:128]
    if not _NAME_RE.fullmatch(name):
        raise MirrorInputError("name may hold letters, digits, '.', '_' and '-' (at most 128)")
    tags = doc.get("tags") or {}
    if not isinstance(tags, dict):
        raise MirrorInputError("tags must be an object with include and exclude lists")
    tag_filter = TagFilter.parse(
        tags.get("include", doc.get("include_tags")), tags.get("exclude", doc.get("exclude_tags"))
    )
    platforms = doc.get("platforms")
    if platforms is not None:
        if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
            raise MirrorInputError("platforms must be a list like ['linux/amd64']")
        try:
            platforms = [str(Platform.parse(p)) for p in platforms] or None
        except OciError as exc:
            raise MirrorInputError(str(exc)) from exc
    schedule = doc.get("schedule") or {}
    if not isinstance(schedule, dict):
        raise MirrorInputError("schedule must be an object with interval_seconds or cron")
    interval = schedule.get("interval_seconds", doc.get("interval_seconds"))
    cron = schedule.get("cron", doc.get("cron"))
    if interval is not None and cron is not None:
        raise MirrorInputError("give interval_seconds or cron, not both")
    if interval is not None and (
        not isinstance(interval, int) or isinstance(interval, bool) or interval < MIN_INTERVAL_SECONDS
    ):
        raise MirrorInputError(f"interval_seconds must be an integer of at least {MIN_INTERVAL_SECONDS}")
    if cron is not None:
        if not isinstance(cron, str) or len(cron) > 128:
            raise MirrorInputError("cron must be a cron expression like '0 3 * * *'")
        check_cron(cron)
    timeout = doc.get("timeout_seconds", 60.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
        raise MirrorInputError("timeout_seconds must be between 1 and 3600")
    for key in ("insecure", "copy_referrers", "enabled", "delete_remote"):
        if key in doc and not isinstance(doc[key], bool):
            raise MirrorInputError(f"{key} must be true or false")
    if doc.get("delete_remote") and direction != "push":
        raise MirrorInputError("delete_remote applies to push mirrors only")
    username = _opt_str(doc, "username")
    password = _opt_str(doc, "password", 4096)
    if password and not username:
        raise MirrorInputError("a password needs a username")
    return {
        "name": name,
        "direction": direction,
        "source_registry": registry,
        "source_repository": repository,
        "destination": destination,
        "insecure": bool(doc.get("insecure", insecure_default)),
        "username": username,
        "password": password,
        "tag_filters": orjson.dumps({"include": tag_filter.include, "exclude": tag_filter.exclude}).decode(),
        "platforms": orjson.dumps(platforms).decode() if platforms else None,
        "interval_seconds": interval,
        "cron": cron,
        "copy_referrers": bool(doc.get("copy_referrers", True)),
        "delete_remote": bool(doc.get("delete_remote", False)),
        "robot": _opt_str(doc, "robot", 128),
        "timeout_seconds": float(timeout),
        "enabled": bool(doc.get("enabled", True)),
    }


def _from_row(r: Any) -> Mirror:
    filters = orjson.loads(r.tag_filters)
    return Mirror(
        id=r.id,
        name=r.name,
        source_registry=r.source_registry,
        source_repository=r.source_repository,
        destination=r.destination,
        insecure=bool(r.insecure),
        username=r.username,
        has_password=bool(r.password_sealed),
        tags=TagFilter(tuple(filters.get("include") or ()), tuple(filters.get("exclude") or ())),
        platforms=orjson.loads(r.platforms) if r.platforms else None,
        interval_seconds=r.interval_seconds,
        cron=r.cron,
        copy_referrers=bool(r.copy_referrers),
        robot=r.robot,
        timeout_seconds=float(r.timeout_seconds),
        enabled=bool(r.enabled),
        next_run_at=r.next_run_at,
        created_by=r.created_by,
        created_at=r.created_at,
        sealed=r.password_sealed,
        direction=r.direction or "pull",
        delete_remote=bool(r.delete_remote),
    )


class MirrorStore:
    """Definitions and runs in the metadata database."""

    def __init__(self, meta: MetadataStore, data_path: Path) -> None:
        self.meta = meta
        self.box = SecretBox(meta, data_path)

    def create(self, values: dict[str, Any], actor: str) -> Mirror:
        values = dict(values)
        password = values.pop("password", None)
        now = utcnow()
        with self.meta.transaction() as conn:
            if conn.execute(select(mirrors.c.id).where(mirrors.c.name == values["name"])).first():
                raise MirrorInputError(f"a mirror named {values['name']!r} exists")
            res = conn.execute(
                mirrors.insert().values(
                    **values,
                    password_sealed=self.box.seal(password) if password else None,
                    next_run_at=next_run(values["interval_seconds"], values["cron"], now),
                    created_by=actor[:128],
                    created_at=now,
                    updated_at=now,
                )
            )
            assert res.inserted_primary_key is not None
            mid = res.inserted_primary_key[0]
        found = self.get(int(mid))
        assert found is not None
        return found

    def get(self, ref: int | str) -> Mirror | None:
        """By id, or by name."""
        q = select(mirrors)
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            q = q.where(mirrors.c.id == int(ref))
        else:
            q = q.where(mirrors.c.name == ref)
        with self.meta.engine.connect() as conn:
            row = conn.execute(q).first()
        return _from_row(row) if row else None

    def all(self) -> list[Mirror]:
        with self.meta.engine.connect() as conn:
            return [_from_row(r) for r in conn.execute(select(mirrors).order_by(mirrors.c.id))]

    def credentials(self, m: Mirror) -> tuple[str, str] | None:
        """(user, password); MirrorInputError when the sealed password cannot be opened."""
        if not m.username:
            return None
        try:
            return m.username, self.box.open(m.sealed) if m.sealed else ""
        except (InvalidTag, ValueError) as exc:
            raise MirrorInputError(
                "the source password cannot be unsealed with this installation's mirror key (a different key?): "
                f"set it again (PATCH /api/v1/mirrors/{m.id} with password)"
            ) from exc

    def delete(self, mirror_id: int) -> bool:
        with self.meta.transaction() as conn:
            runs = select(mirror_runs.c.id).where(mirror_runs.c.mirror_id == mirror_id)
            conn.execute(delete(mirror_run_tags).where(mirror_run_tags.c.run_id.in_(runs)))
            conn.execute(delete(mirror_runs).where(mirror_runs.c.mirror_id == mirror_id))
            return conn.execute(delete(mirrors).where(mirrors.c.id == mirror_id)).rowcount == 1

    def update(self, m: Mirror, patch: dict[str, Any]) -> Mirror:
        """Change a definition (not its name or destination); ``password`` absent keeps the stored one,
        null removes it. The schedule restarts from now when it changes."""
        for key in ("name", "destination", "id", "direction"):
            if key in patch and patch[key] != getattr(m, key):
                raise MirrorInputError(f"{key} cannot be changed: add a new mirror")
        if m.push and "repository" in patch and patch["repository"] != m.destination:
            raise MirrorInputError("repository cannot be changed: add a new mirror")
        doc = m.to_json()
        doc.pop("source", None)
        if m.push:  # validate() reads the remote_* keys first: keep only those the patch gives
            for key in ("remote", "remote_registry", "remote_repository", "repository"):
                doc.pop(key, None)
        if "remote" in patch or "source" in patch:  # a whole new HOST/REPOSITORY replaces both parts
            doc.pop("source_registry", None)
            doc.pop("source_repository", None)
        doc.update({k: v for k, v in patch.items() if k != "password"})
        if "password" not in patch and m.sealed:
            doc["password"] = None
            values = validate(doc)
            values.pop("password")
            values["password_sealed"] = m.sealed if values["username"] else None
        else:
            doc["password"] = patch.get("password")
            values = validate(doc)
            password = values.pop("password")
            values["password_sealed"] = self.box.seal(password) if password else None
        now = utcnow()
        if (values["interval_seconds"], values["cron"]) != (m.interval_seconds, m.cron):
            values["next_run_at"] = next_run(values["interval_seconds"], values["cron"], now)
        with self.meta.transaction() as conn:
            conn.execute(update(mirrors).where(mirrors.c.id == m.id).values(**values, updated_at=now))
        found = self.get(m.id)
        assert found is not None
        return found

    def claim_schedule(self, m: Mirror, now: dt.datetime) -> bool:
        """Move a due mirror's next run forward; True for the one worker whose update won."""
        nxt = next_run(m.interval_seconds, m.cron, now)
        with self.meta.transaction() as conn:
            res = conn.execute(
                update(mirrors)
                .where(mirrors.c.id == m.id, mirrors.c.next_run_at == m.next_run_at)
                .values(next_run_at=nxt)
            )
            return res.rowcount == 1

    # -- runs ----------------------------------------------------------------------------------
    def runs(self, mirror_id: int, limit: int = 20) -> list[dict[str, Any]]:
        with self.meta.engine.connect() as conn:
            rows = conn.execute(
                select(mirror_runs)
                .where(mirror_runs.c.mirror_id == mirror_id)
                .order_by(mirror_runs.c.id.desc())
                .limit(limit)
            ).mappings()
            return [run_json(dict(r)) for r in rows]

    def run(self, run_id: int, with_tags: bool = True) -> dict[str, Any] | None:
        with self.meta.engine.connect() as conn:
            row = conn.execute(select(mirror_runs).where(mirror_runs.c.id == run_id)).mappings().first()
            if row is None:
                return None
            doc = run_json(dict(row))
            if with_tags:
                tags = conn.execute(
                    select(mirror_run_tags).where(mirror_run_tags.c.run_id == run_id).order_by(mirror_run_tags.c.tag)
                ).mappings()
                doc["tags"] = [tag_json(dict(t)) for t in tags]
        return doc


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_json(r: dict[str, Any]) -> dict[str, Any]:
    seconds = None
    if r.get("started_at") and r.get("finished_at"):
        seconds = round((r["finished_at"] - r["started_at"]).total_seconds(), 3)
    return {
        "id": r["id"],
        "mirror_id": r["mirror_id"],
        "trigger": r["trigger"],
        "state": r["state"],
        "attempt": r["attempt"],
        "copied": r["copied"],
        "skipped": r["skipped"],
        "failed": r["failed"],
        "deleted": r["deleted"],
        "bytes": r["bytes"],
        "blobs_copied": r["blobs_copied"],
        "blobs_skipped": r["blobs_skipped"],
        "error": r["error"],
        "created_at": _iso(r["created_at"]),
        "started_at": _iso(r["started_at"]),
        "finished_at": _iso(r["finished_at"]),
        "seconds": seconds,
        "next_retry_at": _iso(r["next_retry_at"]),
    }


def tag_json(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "tag": t["tag"],
        "action": t["action"],
        "state": t["state"],
        "source_digest": t["source_digest"],
        "digest": t["digest"],
        "bytes": t["bytes"],
        "blobs_copied": t["blobs_copied"],
        "blobs_skipped": t["blobs_skipped"],
        "referrers": t["referrers"],
        "attempts": t["attempts"],
        "seconds": t["seconds"],
        "error": t["error"],
        "note": t["note"],
    }
