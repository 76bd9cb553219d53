"""Failed-login throttling, with its counters in the database so that every replica sees them.

Counted per process, a guesser spreading attempts over N replicas behind a load balancer got
N times the allowance. The counters live in the table ``rate_counters`` (one row per
(client, user) pair and one per client address), read once per password login and written
only on failures (and on the first success after one), so the hot path costs one indexed read.
:class:`MemoryCounters` keeps the same rows in a bounded map, for tests and tools without a database.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from sqlalchemy import Connection, Engine, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from hallmark.metadata.tables import rate_counters

# (failures, start): for a pair, start is the time of its last failure; for an address, when its window began.
Entry = tuple[int, float]
PAIR = "login-pair"
ADDR = "login-addr"


class RateLimited(Exception):
    """Too many failed logins from this client, for this user or overall; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Counters(Protocol):
    def get(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Entry]: ...

    def change(self, scope: str, key: str, fn: Callable[[Entry | None], Entry | None]) -> None: ...


class MemoryCounters:
    """Counters of this process only, bounded to ``max_keys`` per scope: past that the entries idle
    the longest are dropped (never all of them, which would hand an attacker a fresh start)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._rows: dict[str, collections.OrderedDict[str, Entry]] = collections.defaultdict(collections.OrderedDict)
        self._lock = threading.Lock()

    def get(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Entry]:
        with self._lock:
            return {(s, k): self._rows[s][k] for s, k in keys if k in self._rows[s]}

    def change(self, scope: str, key: str, fn: Callable[[Entry | None], Entry | None]) -> None:
        with self._lock:
            table = self._rows[scope]
            new = fn(table.get(key))
            if new is None:
                table.pop(key, None)
                return
            table[key] = new
            table.move_to_end(key)
            while len(table) > self.max_keys:
                table.popitem(last=False)


class DatabaseCounters:
    """Counters in ``rate_counters``, shared by every process on the database.

    A change is read-modify-write under a row lock (``FOR UPDATE`` on PostgreSQL; SQLite has one
    writer at a time), so failures counted at once on two replicas are both counted.
    """

    def __init__(self, engine: Engine, transaction: Callable[[], AbstractContextManager[Connection]] | None = None):
        self.engine = engine
        self._transaction = transaction or engine.begin
        self._pruned = 0.0

    def get(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Entry]:
        c = rate_counters.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.scope, c.key, c.count, c.window_start).where(tuple_(c.scope, c.key).in_(keys)))
            return {(scope, key): (int(n), _aware(start).timestamp()) for scope, key, n, start in rows}

    def change(self, scope: str, key: str, fn: Callable[[Entry | None], Entry | None]) -> None:
        c = rate_counters.c
        where = (c.scope == scope) & (c.key == key)
        with self._transaction() as conn:
            row = conn.execute(select(c.count, c.window_start).where(where).with_for_update()).first()
            old = (int(row[0]), _aware(row[1]).timestamp()) if row else None
            new = fn(old)
            if new is None:
                if row is not None:
                    conn.execute(delete(rate_counters).where(where))
                return
            values = {"count": new[0], "window_start": dt.datetime.fromtimestamp(new[1], dt.UTC)}
            if row is not None:
                conn.execute(update(rate_counters).where(where).values(**values))
            else:
                _upsert(conn, scope, key, values)

    def prune(self, older_than: float) -> None:
        """Forget rows untouched for ``older_than`` seconds (at most once a minute per process)."""
        now = time.time()
        if now - self._pruned < 60:
            return
        self._pruned = now
        cutoff = dt.datetime.fromtimestamp(now - older_than, dt.UTC)
        with self._transaction() as conn:
            conn.execute(delete(rate_counters).where(rate_counters.c.window_start < cutoff))


def _upsert(conn: Connection, scope: str, key: str, values: dict[str, object]) -> None:
    """Insert; a row another process inserted meanwhile is overwritten (both saw none, both count 1)."""
    row = {"scope": scope, "key": key, **values}
    if conn.dialect.name == "postgresql":
        ins = postgresql.insert(rate_counters).values(**row)
        conn.execute(ins.on_conflict_do_update(index_elements=["scope", "key"], set_=values))
    elif conn.dialect.name == "sqlite":
        ins_l = sqlite.insert(rate_counters).values(**row)
        conn.execute(ins_l.on_conflict_do_update(index_elements=["scope", "key"], set_=values))
    else:
        conn.execute(rate_counters.insert().values(**row))


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _row_key(*parts: str) -> str:
    """The row key: a digest, as user names are client input (any length, even NUL bytes)."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


class RateLimiter:
    """Failed logins per (client address, user name) pair with growing back-off, and per address.

    A lock per user name would let anyone lock ``admin`` out by guessing wrong five times;
    keyed on the pair, the guesser only slows itself down. Each pair gets ``per_pair`` free
    failures, then must wait ``BACKOFF`` seconds after its last failure, doubling with every
    further failure up to ``window``; a pair is forgotten ``window`` seconds after its back-off
    ended, or at its next success. Spraying many user names from one address is capped by
    ``per_addr`` failures per address within a fixed ``window`` that starts at its first failure.

    ``counters`` decides where the counts live: :class:`DatabaseCounters` (what the server
    uses: shared by replicas, wall-clock time) or :class:`MemoryCounters` (the default).
    """

    BACKOFF = 5.0

    def __init__(
        self,
        per_pair: int,
        per_addr: int,
        window: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.time,
        counters: Counters | None = None,
    ) -> None:
        self.per_pair, self.per_addr, self.window = per_pair, per_addr, window
        self._clock = clock
        self.counters: Counters = counters if counters is not None else MemoryCounters(max_keys)

    def _backoff(self, failures: int) -> float:
        if failures < self.per_pair:
            return 0.0
        return float(min(self.BACKOFF * 2 ** min(failures - self.per_pair, 32), self.window))

    def _pair_state(self, entry: Entry | None, now: float) -> tuple[int, float]:
        """(failures, wait until) of a pair; (0, now) once it is old enough to be forgotten."""
        if entry is None:
            return 0, now
        failures, last = entry
        until = last + self._backoff(failures)
        if now >= until + self.window:
            return 0, now
        return failures, until

    def _addr_state(self, entry: Entry | None, now: float) -> tuple[int, float]:
        """(failures in the current window, when it ends)."""
        if entry is None or now >= entry[1] + self.window:
            return 0, now
        return entry[0], entry[1] + self.window

    def check(self, user: str, addr: str | None) -> tuple[float, bool]:
        """(seconds before this client may try this user again, whether the pair has failures on record)."""
        now = self._clock()
        pair = (PAIR, _row_key(addr or "", user))
        keys = [pair] if addr is None else [pair, (ADDR, _row_key(addr))]
        found = self.counters.get(keys)
        _, until = self._pair_state(found.get(pair), now)
        wait = until - now
        if addr is not None:
            count, ends = self._addr_state(found.get(keys[1]), now)
            if count >= self.per_addr:
                wait = max(wait, ends - now)
        return max(wait, 0.0), pair in found

    def retry_after(self, user: str, addr: str | None) -> float:
        """Seconds before this client may try this user again (0: now)."""
        return self.check(user, addr)[0]

    def fail(self, user: str, addr: str | None) -> None:
        now = self._clock()

        def pair(entry: Entry | None) -> Entry:
            return self._pair_state(entry, now)[0] + 1, now

        def address(entry: Entry | None) -> Entry:
            count, _ = self._addr_state(entry, now)
            return (count + 1, entry[1]) if count and entry else (1, now)

        self.counters.change(PAIR, _row_key(addr or "", user), pair)
        if addr is not None:
            self.counters.change(ADDR, _row_key(addr), address)
        if isinstance(self.counters, DatabaseCounters):
            self.counters.prune(3 * self.window)  # past any back-off (<= window) plus the window after it

    def succeeded(self, user: str, addr: str | None) -> None:
        self.counters.change(PAIR, _row_key(addr or "", user), lambda _: None)
