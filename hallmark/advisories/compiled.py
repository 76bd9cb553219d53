"""The advisory set compiled into an indexed SQLite file that a scan reads per package.

Loading every feed of a set into an :class:`~hallmark.advisories.index.AdvisoryIndex` takes
seconds and hundreds of MB; one CLI scan needs the entries of a few hundred packages. So
``hallmark db update`` writes, next to the set's feeds, ``compiled.sqlite`` from the index it
has just loaded and validated (the same loader for live feeds and mirrors), and ``hallmark scan``
opens that file and reads only the rows of the (ecosystem, name) pairs the image has.

What is stored is what the in-memory index would compute, so findings are identical: each
entry's ranges as written (compiled again on read by the same ``compile_range``), the index's
order of entries per package, and per advisory its record fields plus what the in-memory index
derives from the whole set (KEV flag, EPSS, the related-record rating). The server keeps its
in-memory index: re-matching many images reads every package anyway.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, astuple
from pathlib import Path
from typing import Any

import orjson

from .debian_tracker import SupportNotice
from .index import AdvisoryIndex, AdvisoryInfo, covered
from .osv import Advisory, AffectedPackage, ImportStats, compile_range, version_key_set
from .severity import Rating
from .versions import SCHEMES

#: Bump when the layout or anything stored changes: an older file is then rebuilt, never misread.
FORMAT = 1
FILE_NAME = "compiled.sqlite"
CACHE_KEEP = 8  # compiled copies of ``--db`` folders kept in the cache, newest first

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE advisories (id TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE packages (ecosystem TEXT NOT NULL, name TEXT NOT NULL, doc BLOB NOT NULL,
                       PRIMARY KEY (ecosystem, name)) WITHOUT ROWID;
"""


class CompiledIndexError(Exception):
    """A compiled file that cannot be used (missing, other format, damaged): rebuild it."""


def _entry_doc(e: AffectedPackage, adv_key: str) -> list[Any]:
    ranges = [[r.scheme.name, [list(ev) for ev in r.source]] for r in e.ranges]
    scheme = e.scheme.name if e.scheme is not None else None
    return [adv_key, scheme, ranges, sorted(e.versions), e.purl, e.status_hint, e.note, e.urgency]


def _advisory_doc(a: Advisory, info: AdvisoryInfo) -> dict[str, Any]:
    aliases, kev, epss, related = info
    return {
        "id": a.id,
        "aliases": a.aliases,
        "related": a.related,
        "summary": a.summary,
        "published": a.published,
        "modified": a.modified,
        "cvss_score": a.cvss_score,
        "cvss_vector": a.cvss_vector,
        "severity": a.severity,
        "references": a.references,
        "source": a.source,
        "info": [aliases, kev, epss, list(astuple(related)) if related is not None else None],
    }


def compile_index(idx: AdvisoryIndex, dest: str | Path) -> Path:
    """Write ``idx`` to ``dest`` (atomically: readers see the old file or the whole new one)."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA)
        # One row per advisory *object*: two feeds may each bring a record of the same id (the OSV
        # conversion of a DSA and the tracker's list), and entries keep the record they came with.
        keys: dict[int, str] = {}
        used: dict[str, Advisory] = {}
        rows = []
        for (eco, name), entries in idx.by_package.items():
            if not entries:
                continue
            docs = []
            for e in entries:
                key = keys.get(id(e.advisory))
                if key is None:
                    key = e.advisory.id if e.advisory.id not in used else f"{e.advisory.id}#{len(keys)}"
                    keys[id(e.advisory)] = key
                    used[key] = e.advisory
                docs.append(_entry_doc(e, key))
            rows.append((eco, name, orjson.dumps(docs)))
        db.executemany("INSERT INTO packages VALUES (?, ?, ?)", rows)
        db.executemany(
            "INSERT INTO advisories VALUES (?, ?)",
            ((k, orjson.dumps(_advisory_doc(a, idx.advisory_info(a)))) for k, a in used.items()),
        )
        meta = {
            "format": FORMAT,
            "ecosystems": sorted(idx.ecosystems),
            "support": [asdict(n) for n in idx.support],
            "advisories": len(idx.advisories),
            "imports": [st.as_dict() for st in idx.imports],
        }
        db.executemany("INSERT INTO meta VALUES (?, ?)", ((k, orjson.dumps(v)) for k, v in meta.items()))
        db.commit()
    finally:
        db.close()
    os.replace(tmp, dest)
    return dest


class CompiledIndex:
    """Read side of :func:`compile_index`; implements ``index.AdvisorySource`` for the matcher."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CompiledIndexError(f"{self.path}: no compiled advisory index")
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            meta = {k: orjson.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
        except (sqlite3.Error, orjson.JSONDecodeError) as exc:
            raise CompiledIndexError(f"{self.path}: {exc}") from exc
        if meta.get("format") != FORMAT:
            self._db.close()
            raise CompiledIndexError(f"{self.path}: format {meta.get('format')}, expected {FORMAT}")
        self.ecosystems: set[str] = set(meta["ecosystems"])
        self.advisory_count: int = meta["advisories"]
        self._support_docs: list[dict[str, Any]] = meta["support"]
        #: what each feed file gave when the set was loaded (``ImportStats``, as the in-memory index has)
        self.imports = [_stats(d) for d in meta["imports"]]
        self._support: AdvisoryIndex | None = None
        self.key_cache: dict[tuple[str, str], Any] = {}
        self.match_cache: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._entries: dict[tuple[str, str], list[AffectedPackage]] = {}
        self._advisories: dict[str, Advisory] = {}
        self._info: dict[int, AdvisoryInfo] = {}  # by id() of the Advisory objects this index made

    def close(self) -> None:
        """Close the file (the index must not be used afterwards)."""
        self._db.close()

    def covers(self, ecosystem: str) -> bool:
        """Whether any advisory data exists for this ecosystem (as ``AdvisoryIndex.covers``)."""
        return covered(self.ecosystems, ecosystem)

    def lookup(self, ecosystem: str, name: str) -> list[AffectedPackage]:
        """Entries for one normalised package name, read and compiled on first use."""
        key = (ecosystem, name)
        hit = self._entries.get(key)
        if hit is not None:
            return hit
        row = self._db.execute("SELECT doc FROM packages WHERE ecosystem = ? AND name = ?", key).fetchone()
        docs: list[list[Any]] = orjson.loads(row[0]) if row else []
        self._load_advisories(d[0] for d in docs)
        out = [self._entry(ecosystem, name, d) for d in docs]
        self._entries[key] = out
        return out

    def _load_advisories(self, ids: Iterable[str]) -> None:
        missing = [i for i in dict.fromkeys(ids) if i not in self._advisories]
        for i in range(0, len(missing), 500):
            part = missing[i : i + 500]
            sql = f"SELECT id, doc FROM advisories WHERE id IN ({','.join('?' * len(part))})"
            for key, raw in self._db.execute(sql, part):
                doc = orjson.loads(raw)
                aliases, kev, epss, related = doc.pop("info")
                for k in ("aliases", "related", "references"):
                    doc[k] = tuple(doc[k])
                adv = self._advisories[key] = Advisory(**doc)
                self._info[id(adv)] = (aliases, kev, epss, Rating(*related) if related is not None else None)

    def _entry(self, ecosystem: str, name: str, doc: list[Any]) -> AffectedPackage:
        adv_id, scheme_name, ranges, versions, purl, status_hint, note, urgency = doc
        scheme = SCHEMES[scheme_name] if scheme_name is not None else None
        compiled = tuple(compile_range(SCHEMES[s], [{k: v} for k, v in events]) for s, events in ranges)
        return AffectedPackage(
            advisory=self._advisories[adv_id],
            ecosystem=ecosystem,
            name=name,
            scheme=scheme,
            ranges=compiled,
            versions=frozenset(versions),
            version_keys=version_key_set(scheme, versions),
            purl=purl,
            status_hint=status_hint,
            note=note,
            urgency=urgency,
        )

    def advisory_info(self, adv: Advisory) -> AdvisoryInfo:
        """Aliases, KEV flag, EPSS and related-record rating, as computed at compile time."""
        return self._info[id(adv)]

    def has_support(self) -> bool:
        """Whether debian-security-support tables were in the set."""
        return bool(self._support_docs)

    def support_notices(self, package: str, release: str | None) -> list[SupportNotice]:
        """debian-security-support notices, by the in-memory index's rules (loaded on first use)."""
        if self._support is None:
            self._support = AdvisoryIndex(support=[SupportNotice(**d) for d in self._support_docs])
        return self._support.support_notices(package, release)


def _stats(doc: dict[str, Any]) -> ImportStats:
    st = ImportStats(doc["source"], doc["members"], doc["loaded"], doc["withdrawn"], doc["affected_entries"])
    st.skipped.update(doc["skipped"])
    st.examples.update(doc["examples"])
    return st


def open_or_compile(folder: str | Path, dest: str | Path | None = None) -> CompiledIndex | AdvisoryIndex:
    """The compiled index of a set folder; a set without one (imported before compiling existed,
    or of an older format) is loaded in memory once, compiled for next time and returned as loaded."""
    from .index import load_snapshot

    path = Path(dest) if dest is not None else Path(folder) / FILE_NAME
    try:
        return CompiledIndex(path)
    except CompiledIndexError:
        pass
    idx = load_snapshot(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        compile_index(idx, path)
    except OSError:
        pass  # a read-only set still scans, just without the speed-up
    return idx


#: The files :func:`hallmark.advisories.index.load_snapshot` reads, as globs under a data folder.
FEED_GLOBS = (
    "osv/*/all.zip",
    "debian/security-tracker/data/*/list",
    "debian/security-tracker/tracker.json",
    "debian/security-support/security-support-*",
    "alpine/secdb/*/*.json",
    "epss/epss_scores-current.csv.gz",
    "kev/known_exploited_vulnerabilities.json",
)


def folder_fingerprint(folder: str | Path) -> str:
    """Identifies a data folder's feed files as they are now (path, size, mtime): a changed feed
    gives a new fingerprint, so a cached compiled file is never used for other data."""
    base = Path(folder).resolve()
    h = hashlib.sha256(f"{FORMAT}\0{base}".encode())
    for pattern in FEED_GLOBS:
        for p in sorted(base.glob(pattern)):
            st = p.stat()
            h.update(f"\0{p.relative_to(base)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def cache_root() -> Path:
    """Where compiled copies of ``--db`` folders are kept: ``$XDG_CACHE_HOME/hallmark``
    (default ``~/.cache/hallmark``). Not a ``HALLMARK_*`` variable: those are configuration keys."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hallmark"


def open_folder(folder: str | Path) -> CompiledIndex | AdvisoryIndex:
    """A data folder given on the command line (``hallmark scan --db DIR``), compiled once into
    the cache and reused while its feed files are unchanged."""
    dest = cache_root() / "advisories" / f"{folder_fingerprint(folder)}.sqlite"
    idx = open_or_compile(folder, dest)
    if isinstance(idx, AdvisoryIndex):  # a new copy was written: keep the cache bounded
        kept = sorted(dest.parent.glob("*.sqlite"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[CACHE_KEEP:]:
            old.unlink(missing_ok=True)
    return idx
