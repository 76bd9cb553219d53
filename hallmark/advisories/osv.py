"""OSV records: loading ``all.zip`` exports, compiling ranges, evaluating them, CVSS scores.

Range evaluation follows the OSV schema's "Evaluation" pseudocode exactly
(``IncludedInVersions`` or ``IncludedInRanges`` with ``BeforeLimits``); ranges are
compiled once into sort keys of the ecosystem's version scheme so matching only
compares keys. GIT ranges are skipped (they need the repository graph).

Record checking is a hand-written structural check of the fields matching relies
on, not a full JSON-Schema validation: validating ~30k records with jsonschema
would dominate the import-time budget, and fields we do not read cannot hurt
matching. CVSS base scores come from the ``cvss`` library (v2, v3.x, v4.0).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from packaging.utils import canonicalize_name

from .versions import SCHEMES, UnparseableVersion, VersionScheme, ecosystem_base, scheme_for_ecosystem

if TYPE_CHECKING:
    import httpx  # loaded when a feed is fetched over HTTP, not for every scan

INTRODUCED, FIXED, LAST_AFFECTED = 0, 1, 2
_EVENT_KINDS = {"introduced": INTRODUCED, "fixed": FIXED, "last_affected": LAST_AFFECTED}

OSV_BASE_URL = "https://osv-vulnerabilities.storage.googleapis.com"


class Verdict(Enum):
    """Outcome of evaluating one affected entry against one installed version."""

    AFFECTED = "affected"
    NOT_AFFECTED = "not_affected"
    UNKNOWN = "could_not_compare"


# --------------------------------------------------------------------------- names


def normalize_name(ecosystem: str, name: str) -> str:
    """Package name as advisories and inventories are joined on, per ecosystem rules."""
    base = ecosystem_base(ecosystem)
    if base == "PyPI":
        return canonicalize_name(name)  # PEP 503
    if base in ("npm", "Go", "Maven", "RubyGems", "Hex", "Pub", "SwiftURL"):
        return name.strip()  # case-sensitive registries
    return name.strip().lower()  # Debian/Alpine/rpm distros, crates.io, NuGet, Packagist


# --------------------------------------------------------------------------- severity


def cvss_base_score(vector: str) -> float | None:
    """Base score of a CVSS v2 / v3.x / v4.0 vector, or None if the vector is invalid."""
    from cvss import CVSS2, CVSS3, CVSS4  # only when loading feeds, not for every scan

    v = vector.strip()
    try:
        if v.startswith("CVSS:4"):
            return float(CVSS4(v).base_score)
        if v.startswith("CVSS:3"):
            return float(CVSS3(v).base_score)
        return float(CVSS2(v).base_score)
    except Exception:  # the library raises several exception types for malformed vectors
        return None


def severity_from_score(score: float | None) -> str | None:
    """Qualitative rating of a CVSS v3/v4 score (FIRST's scale)."""
    if score is None:
        return None
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    if score > 0.0:
        return "low"
    return "none"


_LABELS = {"critical": "critical", "high": "high", "moderate": "medium", "medium": "medium", "low": "low"}


def _pick_severity(record: dict[str, Any]) -> tuple[float | None, str | None, str | None]:
    """(score, vector, label): the newest CVSS vector wins; database_specific as fallback."""
    best: tuple[int, float, str] | None = None
    for sev in record.get("severity") or []:
        if not isinstance(sev, dict):
            continue
        vector = str(sev.get("score", ""))
        rank = {"CVSS_V4": 3, "CVSS_V3": 2, "CVSS_V2": 1}.get(str(sev.get("type")), 0)
        score = cvss_base_score(vector) if rank else None
        if score is not None and (best is None or rank > best[0]):
            best = (rank, score, vector)
    if best is not None:
        return best[1], best[2], severity_from_score(best[1])
    # Scores without vectors: the record's database_specific, else its affected entries'
    # (the RubyGems conversion keeps ruby-advisory-db's cvss_v3/cvss_v2 numbers per entry).
    places = [record.get("database_specific")]
    places += [a.get("database_specific") for a in record.get("affected") or [] if isinstance(a, dict)]
    dicts = [d for d in places if isinstance(d, dict)]
    for k in ("cvss_v4", "cvss_v3", "cvss_v2"):
        for dbs in dicts:
            raw = dbs.get(k)
            if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
                try:
                    score = float(raw)
                except ValueError:
                    continue
                label = severity_from_score(score) if k != "cvss_v2" else _v2_severity(score)
                return score, None, label
    for dbs in dicts:
        label = dbs.get("severity")
        if isinstance(label, str) and label.lower() in _LABELS:
            return None, None, _LABELS[label.lower()]
    return None, None, None


def _v2_severity(score: float) -> str | None:
    """CVSS v2 has no "critical": NVD's v2 scale (low < 4.0 <= medium < 7.0 <= high)."""
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0.0 else "none"


# --------------------------------------------------------------------------- model


@dataclass(slots=True)
class Advisory:
    """One advisory (OSV record, DSA/DLA, or CVE from a distro feed)."""

    id: str
    aliases: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    summary: str = ""
    published: str | None = None
    modified: str | None = None
    cvss_score: float | None = None
    cvss_vector: str | None = None
    severity: str | None = None
    references: tuple[str, ...] = ()
    source: str = ""

    @property
    def cves(self) -> tuple[str, ...]:
        """CVE identifiers among id, aliases and related (for KEV joins)."""
        ids = (self.id, *self.aliases, *self.related)
        return tuple(dict.fromkeys(i for i in ids if i.startswith("CVE-")))


@dataclass(slots=True)
class CompiledRange:
    """An OSV range precompiled to sort keys; ``broken`` holds a reason when an event did not parse."""

    scheme: VersionScheme
    events: tuple[tuple[Any, int, str], ...]  # (key or None for "0", kind, raw), sorted
    limits: tuple[Any, ...] = ()
    broken: str | None = None
    upper_fixed: Any = None  # fast path: range is exactly [introduced 0, fixed X)
    source: tuple[tuple[str, str], ...] = ()  # the events as written (kind, version): compiles back to this range

    @property
    def fixed_versions(self) -> list[str]:
        """Raw ``fixed`` versions of this range."""
        return [raw for _, kind, raw in self.events if kind == FIXED]

    def contains(self, v: Any) -> bool:
        """OSV IncludedInRanges for one range, on a key of the same scheme."""
        if self.upper_fixed is not None:
            return bool(v < self.upper_fixed)
        if self.limits and not any(v < lim for lim in self.limits):
            return False
        vulnerable = False
        for k, kind, _ in self.events:
            if k is not None and v < k:
                break  # events are sorted: no later event can fire
            if kind == INTRODUCED:
                vulnerable = True
            elif kind == FIXED:
                vulnerable = False
            elif k is None or v > k:  # last_affected
                vulnerable = False
        return vulnerable


def compile_range(scheme: VersionScheme, raw_events: list[dict[str, str]]) -> CompiledRange:
    """Sort a range's events by version, ``introduced: "0"`` first.

    The sort is stable, so events at equal versions keep their order in the
    record, as OSV.dev's own evaluator does (``[introduced 0, fixed 2.0,
    introduced 2.0, fixed 3.0]`` stays affected from 2.0 on).
    """
    events: list[tuple[Any, int, str]] = []
    limits: list[Any] = []
    source = tuple((name, raw) for ev in raw_events for name, raw in ev.items())
    try:
        for name, raw in source:
            if name == "limit":
                if "*" not in raw:
                    limits.append(scheme.key(raw))
                continue
            kind = _EVENT_KINDS[name]
            if kind == INTRODUCED and raw == "0":
                events.append((None, kind, raw))
            else:
                events.append((scheme.key(raw), kind, raw))
    except UnparseableVersion as exc:
        return CompiledRange(scheme, (), (), broken=str(exc), source=source)
    events.sort(key=lambda e: (e[0] is not None, e[0] if e[0] is not None else 0))
    rng = CompiledRange(scheme, tuple(events), tuple(limits), source=source)
    if not limits and len(events) == 2 and events[0][0] is None and events[1][1] == FIXED:
        rng.upper_fixed = events[1][0]
    return rng


@dataclass(slots=True)
class AffectedPackage:
    """One ``affected[]`` entry, compiled for matching."""

    advisory: Advisory
    ecosystem: str  # full OSV ecosystem string, e.g. "Debian:11"
    name: str  # normalised
    scheme: VersionScheme | None
    ranges: tuple[CompiledRange, ...] = ()
    versions: frozenset[str] = frozenset()
    version_keys: frozenset[Any] | tuple[Any, ...] = ()  # a set when the scheme's keys are hashable
    purl: str | None = None
    status_hint: str | None = None  # "wont_fix" from distro trackers (<no-dsa>, <end-of-life>)
    note: str | None = None
    urgency: str | None = None

    def evaluate(self, version: str, keys: dict[str, Any] | None = None) -> Verdict:
        """OSV IsVulnerable for this entry; UNKNOWN when the version or a range cannot be compared.

        ``keys`` caches the installed version's key per scheme name (None = unparseable).
        """
        if version in self.versions:
            return Verdict.AFFECTED
        if not self.ranges and not self.version_keys:
            return Verdict.NOT_AFFECTED
        uncertain = False
        for rng in self.ranges:
            if rng.broken is not None:
                uncertain = True
                continue
            v = _key_for(rng.scheme, version, keys)
            if v is None:
                return Verdict.UNKNOWN
            if rng.contains(v):
                return Verdict.AFFECTED
        if self.version_keys and self.scheme is not None:
            v = _key_for(self.scheme, version, keys)
            if v is None:
                return Verdict.UNKNOWN
            if v in self.version_keys:
                return Verdict.AFFECTED
        return Verdict.UNKNOWN if uncertain else Verdict.NOT_AFFECTED

    def fixed_versions(self) -> list[str]:
        """All ``fixed`` versions named by this entry's ranges."""
        out: list[str] = []
        for rng in self.ranges:
            out.extend(rng.fixed_versions)
        return list(dict.fromkeys(out))


_MISSING = object()


def _key_for(scheme: VersionScheme, version: str, keys: dict[str, Any] | None) -> Any:
    if keys is not None:
        k = keys.get(scheme.name, _MISSING)
        if k is not _MISSING:
            return k
    try:
        k = scheme.key(version)
    except UnparseableVersion:
        k = None
    if keys is not None:
        keys[scheme.name] = k
    return k


# --------------------------------------------------------------------------- parsing records


class RecordError(ValueError):
    """A record that fails the structural OSV checks."""


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise RecordError(f"{what} must be a list of strings")
    return tuple(value)


def parse_record(
    record: Any, source: str = "", ecosystem_filter: str | None = None
) -> tuple[Advisory, list[AffectedPackage], list[str]]:
    """Turn one OSV JSON object into an Advisory and its compiled affected entries.

    Returns ``(advisory, affected, problems)`` where problems are per-entry skip
    reasons (e.g. "unknown ecosystem: Foo"). Raises RecordError for records that
    fail the schema checks as a whole.
    """
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    rid = record.get("id")
    if not isinstance(rid, str) or not rid:
        raise RecordError("missing id")
    if not isinstance(record.get("modified"), str):
        raise RecordError("missing modified")
    affected_raw = record.get("affected") or []
    if not isinstance(affected_raw, list):
        raise RecordError("affected must be a list")
    refs = record.get("references") or []
    if not isinstance(refs, list):
        raise RecordError("references must be a list")
    score, vector, label = _pick_severity(record)
    adv = Advisory(
        id=rid,
        aliases=_str_list(record.get("aliases"), "aliases"),
        related=_str_list(record.get("related"), "related"),
        summary=str(record.get("summary") or record.get("details") or "")[:500],
        published=record.get("published"),
        modified=record.get("modified"),
        cvss_score=score,
        cvss_vector=vector,
        severity=label,
        references=tuple(str(r["url"]) for r in refs if isinstance(r, dict) and "url" in r),
        source=source,
    )
    entries: list[AffectedPackage] = []
    problems: list[str] = []
    for aff in affected_raw:
        pkg = aff.get("package") if isinstance(aff, dict) else None
        if not isinstance(pkg, dict) or not isinstance(pkg.get("ecosystem"), str) or not pkg.get("name"):
            raise RecordError("affected[].package needs ecosystem and name")
        eco = _canonical_ecosystem(pkg["ecosystem"])
        if ecosystem_filter and ecosystem_base(eco) != ecosystem_filter:
            continue
        scheme = scheme_for_ecosystem(eco)
        ranges_raw = aff.get("ranges") or []
        if not isinstance(ranges_raw, list):
            raise RecordError("affected[].ranges must be a list")
        ranges: list[CompiledRange] = []
        for rng in ranges_raw:
            if not isinstance(rng, dict) or not isinstance(rng.get("events"), list):
                raise RecordError("range needs events")
            rtype = rng.get("type")
            if rtype == "GIT":
                continue
            for ev in rng["events"]:
                if not isinstance(ev, dict) or len(ev) != 1 or not isinstance(next(iter(ev.values())), str):
                    raise RecordError("each event needs exactly one string field")
                if next(iter(ev)) not in ("introduced", "fixed", "last_affected", "limit"):
                    raise RecordError(f"unknown event {next(iter(ev))!r}")
            if rtype == "SEMVER":
                rscheme: VersionScheme | None = SCHEMES["semver"]
            elif rtype == "ECOSYSTEM":
                rscheme = scheme
            else:
                raise RecordError(f"unknown range type {rtype!r}")
            if rscheme is None:
                problems.append(f"unknown ecosystem: {ecosystem_base(eco)}")
                break
            ranges.append(compile_range(rscheme, rng["events"]))
        else:
            versions = _str_list(aff.get("versions"), "versions")
            if scheme is None and versions and not ranges:
                problems.append(f"unknown ecosystem: {ecosystem_base(eco)}")
                continue
            for rng_c in ranges:
                if rng_c.broken:
                    problems.append(f"unparseable range version ({ecosystem_base(eco)})")
            entries.append(
                AffectedPackage(
                    advisory=adv,
                    ecosystem=eco,
                    name=normalize_name(eco, str(pkg["name"])),
                    scheme=scheme,
                    ranges=tuple(ranges),
                    versions=frozenset(versions),
                    version_keys=version_key_set(scheme, versions),
                    purl=pkg.get("purl") if isinstance(pkg.get("purl"), str) else None,
                )
            )
    return adv, entries, problems


def version_key_set(scheme: VersionScheme | None, versions: Iterable[str]) -> frozenset[Any] | tuple[Any, ...]:
    """Sort keys of an entry's listed versions; unparseable ones still match by exact string."""
    keys: list[Any] = []
    if scheme is not None:
        for ver in versions:
            try:
                keys.append(scheme.key(ver))
            except UnparseableVersion:
                pass
    try:
        return frozenset(keys)
    except TypeError:  # cmp_to_key-based keys are not hashable
        return tuple(keys)


def _canonical_ecosystem(eco: str) -> str:
    """Normalise distro ecosystem strings: ``Ubuntu:22.04:LTS`` -> ``Ubuntu:22.04``."""
    if eco.startswith("Ubuntu:") and eco.endswith(":LTS"):
        return eco[: -len(":LTS")]
    return eco


# --------------------------------------------------------------------------- loading


@dataclass
class ImportStats:
    """What one import read and what it skipped, with reasons (kept in the import record)."""

    source: str
    members: int = 0
    loaded: int = 0
    withdrawn: int = 0
    affected_entries: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, member: str) -> None:
        """Count a skipped member or entry, keeping the first few names per reason."""
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(member)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "source": self.source,
            "members": self.members,
            "loaded": self.loaded,
            "withdrawn": self.withdrawn,
            "affected_entries": self.affected_entries,
            "skipped": dict(self.skipped),
            "examples": self.examples,
        }


@dataclass
class OsvLoad:
    """Result of loading one OSV export."""

    advisories: list[Advisory]
    affected: list[AffectedPackage]
    stats: ImportStats


def osv_zip_location(base: str | Path, ecosystem: str) -> str:
    """``<base>/<Ecosystem>/all.zip`` for a base URL or a mirror folder."""
    b = str(base).rstrip("/")
    return f"{b}/{ecosystem}/all.zip"


def open_source(location: str | Path, client: httpx.Client | None = None) -> IO[bytes]:
    """A readable binary stream for a local path, ``file://`` URL or http(s) URL."""
    loc = str(location)
    if loc.startswith(("http://", "https://")):
        import httpx

        if client is None:
            with httpx.Client(follow_redirects=True, timeout=120) as c:
                resp = c.get(loc)
        else:
            resp = client.get(loc)
        resp.raise_for_status()
        return io.BytesIO(resp.content)
    if loc.startswith("file://"):
        loc = loc[len("file://") :]
    return open(loc, "rb")  # the caller closes it


def load_osv_zip(
    location: str | Path,
    client: httpx.Client | None = None,
    ecosystem_filter: str | None = None,
) -> OsvLoad:
    """Load an OSV ``all.zip`` from a path or URL; bad members are counted and skipped, never fatal."""
    with open_source(location, client) as fh:
        return parse_osv_zip(fh, str(location), ecosystem_filter)


def parse_osv_zip(fh: IO[bytes], source: str, ecosystem_filter: str | None = None) -> OsvLoad:
    """Parse an OSV bulk zip from a binary stream (shared by file and HTTP loading)."""
    stats = ImportStats(source)
    advisories: list[Advisory] = []
    affected: list[AffectedPackage] = []
    try:
        zf = zipfile.ZipFile(fh)
    except zipfile.BadZipFile:
        stats.skip("not a zip archive", source)
        return OsvLoad(advisories, affected, stats)
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            stats.members += 1
            name = info.filename
            if not name.endswith(".json"):
                stats.skip("not a .json member", name)
                continue
            try:
                raw = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
                stats.skip(f"corrupt zip member ({type(exc).__name__})", name)
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                stats.skip("invalid JSON", name)
                continue
            if isinstance(record, dict) and record.get("withdrawn"):
                stats.withdrawn += 1
                continue
            try:
                adv, entries, problems = parse_record(record, source, ecosystem_filter)
            except (RecordError, AttributeError, TypeError, KeyError, ValueError) as exc:
                stats.skip(f"schema: {exc}", name)
                continue
            for p in problems:
                stats.skip(p, name)
            stats.loaded += 1
            stats.affected_entries += len(entries)
            advisories.append(adv)
            affected.extend(entries)
    return OsvLoad(advisories, affected, stats)
