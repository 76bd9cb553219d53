"""Tamper-evident audit log: an append-only hash chain, written in batches off the request path.

``record()`` only queues (a list append under a lock), so the manifest GET hot path stays
fast; a background task flushes the queue every ``audit_flush_interval_seconds`` in one
transaction. Each entry's hash covers the previous entry's hash, so editing or deleting
any row breaks verification from that row on. Pruning keeps a checkpoint (the hash of
the last pruned entry) so what remains still verifies.
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

log = logging.getLogger(__name__)

ALLOWED = "allowed"
DENIED = "denied"
GENESIS = "0" * 64


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
        """Queue one entry (never blocks on the database). ``detail`` must not contain secrets."""
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

    def flush(self) -> int:
        """Write everything queued in one transaction (entries stay queued if the write fails)."""
        with self._flush_lock:
            with self._lock:
                batch, self._queue = self._queue, []
            if not batch:
                return 0
            try:
                return self.store.append_audit(batch, entry_hash)
            except Exception:
                with self._lock:
                    self._queue[:0] = batch
                raise

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
