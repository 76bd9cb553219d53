"""Tamper-evident audit log: an append-only hash chain.

Each entry's hash covers the previous entry's hash, so editing or deleting any row breaks
verification from that row on. Pruning keeps a checkpoint (the hash of the last pruned
entry) so what remains still verifies.

Two kinds of entries. Security-relevant ones (:data:`DURABLE_ACTIONS`: pushes, deletes,
account, grant and token changes, promotion, signing...) are committed before ``record()``
returns, so a response that acknowledges the change is never sent for an entry a crash
could lose (``kill -9`` during pushes used to leave acknowledged manifests unlogged).
Reads and logins (pull, login, token.issue...) only queue (a list append under a lock),
so the manifest GET hot path stays fast; a background task flushes the queue every
``audit_flush_interval_seconds``. A durable write flushes everything queued before it in
the same transaction, so the chain keeps the order entries were recorded in, and callers
that arrive while a flush runs share the next one (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from hallmark.access.store import AccessStore, AuditRow, aware, utcnow
from hallmark.logs import current_request_id

log = logging.getLogger(__name__)

ALLOWED = "allowed"
DENIED = "denied"
GENESIS = "0" * 64

# Written before record() returns. Everything else is batched: pull (allowed and denied),
# login, token.issue (a registry session handshake, made on every pull: it changes nothing
# and is as frequent as pulls) and rescan (queues a scan, changes no content or access).
DURABLE_ACTIONS: frozenset[str] = frozenset(
    {
        # registry content
        "push",
        "delete",
        "untag",
        "blob.delete",
        "blob.mount",
        "gc",
        "tag.restore",
        "repository.retention",
        # accounts, credentials and who may do what
        "user.create",
        "user.password",
        "user.disable",
        "user.enable",
        "user.delete",
        "robot.create",
        "robot.delete",
        "robot.revoke",
        "token.create",
        "token.revoke",
        "permission.grant",
        "permission.revoke",
        "team.create",
        "team.delete",
        "team.add_member",
        "team.remove_member",
        "namespace.create",
        "namespace.delete",
        "repository.visibility",
        "repository.update",
        # the catalog's trust decisions
        "catalog.update",
        "promote",
        "sign",
        "vex.upload",
        "vex.delete",
        "advisories.update",
        # what the cluster was allowed to run (hallmark.admission)
        "admission.review",
    }
)
# Families whose every member changes accounts or access: new actions there are durable too.
DURABLE_FAMILIES: tuple[str, ...] = ("user.", "robot.", "team.", "permission.", "role.", "namespace.")


def is_durable(action: str) -> bool:
    """Whether ``record(action=...)`` commits before returning (see :data:`DURABLE_ACTIONS`)."""
    return action in DURABLE_ACTIONS or action.startswith(DURABLE_FAMILIES)


def entry_hash(prev_hash: str, seq: int, e: dict[str, Any]) -> str:
    """The chain link: SHA-256 over the previous hash and a canonical encoding of the entry."""
    ts = e["ts"]
    ts = (aware(ts) or ts).astimezone(dt.UTC).isoformat(timespec="microseconds")
    doc = [
        seq,
        ts,
        e["actor"],
        e["action"],
        e.get("repo"),
        e.get("digest"),
        e["result"],
        e.get("client_addr"),
        e.get("detail"),
    ]
    return hashlib.sha256(prev_hash.encode() + orjson.dumps(doc)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_hash: str | None = None


def row_dict(r: AuditRow) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "time": r.ts.astimezone(dt.UTC).isoformat(),
        "actor": r.actor,
        "action": r.action,
        "repository": r.repo,
        "digest": r.digest,
        "result": r.result,
        "client_addr": r.client_addr,
        "detail": orjson.loads(r.detail) if r.detail else None,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    }


class AuditLog:
    def __init__(self, store: AccessStore, flush_interval: float = 0.5) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self._queue: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # Entries ever queued and ever written by this log: a durable caller whose entry
        # number is <= _written knows a flush it waited behind already committed it.
        self._queued = 0
        self._written = 0

    def record(
        self,
        actor: str,
        action: str,
        repo: str | None = None,
        digest: str | None = None,
        result: str = ALLOWED,
        client_addr: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record one entry; ``detail`` must not contain secrets.

        Security-relevant actions (:func:`is_durable`) are committed before this returns and
        raise if the database write fails (the entry stays queued for the next flush), so
        the caller cannot acknowledge a change whose entry is lost. Other actions only queue.
        """
        ticket = self._enqueue(actor, action, repo, digest, result, client_addr, detail)
        if is_durable(action):
            self._flush_through(ticket)

    async def record_durable(
        self,
        actor: str,
        action: str,
        repo: str | None = None,
        digest: str | None = None,
        result: str = ALLOWED,
        client_addr: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """``record()`` for the event loop: the commit of a security-relevant entry waits in a
        worker thread, so the loop keeps serving and concurrent requests share one flush."""
        ticket = self._enqueue(actor, action, repo, digest, result, client_addr, detail)
        if is_durable(action):
            await asyncio.get_running_loop().run_in_executor(None, self._flush_through, ticket)

    def _enqueue(
        self,
        actor: str,
        action: str,
        repo: str | None,
        digest: str | None,
        result: str,
        client_addr: str | None,
        detail: dict[str, Any] | None,
    ) -> int:
        """Queue one entry; returns its number in this log's recording order.

        The id of the HTTP request being handled (:data:`hallmark.logs.REQUEST_ID`) goes into
        ``detail.request_id``: part of the hashed entry like any detail, so the chain verifies as before
        and the id cannot be changed afterwards without breaking it."""
        request_id = current_request_id()
        if request_id and "request_id" not in (detail or {}):
            detail = {**(detail or {}), "request_id": request_id}
        entry = {
            "ts": utcnow(),
            "actor": actor[:128],
            "action": action[:64],
            "repo": repo[:255] if repo else None,
            "digest": digest[:140] if digest else None,
            "result": result,
            "client_addr": client_addr[:64] if client_addr else None,
            "detail": orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode() if detail else None,
        }
        with self._lock:
            self._queue.append(entry)
            self._queued += 1
            return self._queued

    @property
    def pending(self) -> int:
        """Entries recorded here and not yet handed to the database."""
        with self._lock:
            return len(self._queue)

    def _flush_through(self, ticket: int) -> None:
        """Commit entries up to number ``ticket`` (and whatever queued after it, in one transaction)."""
        with self._flush_lock:
            if self._written < ticket:
                self._flush_locked()

    def flush(self) -> int:
        """Write everything queued in one transaction (entries stay queued if the write fails)."""
        with self._flush_lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        with self._lock:
            batch, self._queue = self._queue, []
        if not batch:
            return 0
        try:
            n = self.store.append_audit(batch, entry_hash)
        except BaseException:
            with self._lock:
                self._queue[:0] = batch
            raise
        self._written += len(batch)
        return n

    async def run(self, executor: Any = None) -> None:
        """Background flusher for the server; flushes once more when cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.flush_interval)
                if self._queue:
                    try:
                        await loop.run_in_executor(executor, self.flush)
                    except Exception:
                        log.exception("audit flush failed; will retry")
        finally:
            with contextlib.suppress(Exception):
                self.flush()

    # -- reading -----------------------------------------------------------------------
    def query(self, **filters: Any) -> list[dict[str, Any]]:
        return [row_dict(r) for r in self.store.query_audit(**filters)]

    def export(self) -> Iterator[bytes]:
        """JSON Lines, oldest first, including the chain hashes so an export can be re-verified."""
        for r in self.store.iter_audit():
            yield orjson.dumps(row_dict(r)) + b"\n"

    def verify(self) -> VerifyResult:
        cp = self.store.checkpoint()
        prev, expected_seq = (cp[1], cp[0] + 1) if cp else (GENESIS, 1)
        checked = 0
        for r in self.store.iter_audit():
            if checked == 0 and cp is None and r.seq != 1:
                return VerifyResult(False, checked, r.seq, "entries before this one are missing and no checkpoint")
            if r.seq != expected_seq:
                return VerifyResult(False, checked, r.seq, f"sequence gap: expected {expected_seq}")
            if r.prev_hash != prev:
                return VerifyResult(False, checked, r.seq, "previous-hash link does not match")
            e = {
                "ts": r.ts,
                "actor": r.actor,
                "action": r.action,
                "repo": r.repo,
                "digest": r.digest,
                "result": r.result,
                "client_addr": r.client_addr,
                "detail": r.detail,
            }
            if entry_hash(prev, r.seq, e) != r.hash:
                return VerifyResult(False, checked, r.seq, "entry content does not match its hash")
            prev = r.hash
            expected_seq += 1
            checked += 1
        return VerifyResult(True, checked, head_hash=prev)

    def prune(self, retention_days: int, now: dt.datetime | None = None) -> int:
        if retention_days <= 0:
            return 0
        self.flush()
        return self.store.prune_audit((now or utcnow()) - dt.timedelta(days=retention_days))
