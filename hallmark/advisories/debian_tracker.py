"""Debian security tracker feeds: DSA/DLA lists, the tracker JSON, debian-security-support tables.

Written by hand because these are Debian-specific text formats with no Python
parser on PyPI (debsecan and the tracker itself parse them in-tree). Everything
becomes :class:`~hallmark.advisories.osv.AffectedPackage` entries in the same
``Debian:<N>`` ecosystems that OSV uses, so the matcher treats both sources alike.

States: a fixed version gives ``[0, fixed)``; ``<unfixed>`` gives "no fix yet";
``<no-dsa>``, ``<ignored>``, ``<postponed>`` and ``<end-of-life>`` give
"will not fix" (affected, no fix planned); ``<not-affected>`` gives no entry.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .osv import Advisory, AffectedPackage, CompiledRange, ImportStats, compile_range
from .versions import SCHEMES

DPKG = SCHEMES["dpkg"]

#: Debian release codename -> OSV ``Debian:<N>`` release number (distro-info-data).
CODENAMES: dict[str, str] = {
    "woody": "3.0",
    "sarge": "3.1",
    "etch": "4",
    "lenny": "5",
    "squeeze": "6",
    "wheezy": "7",
    "jessie": "8",
    "stretch": "9",
    "buster": "10",
    "bullseye": "11",
    "bookworm": "12",
    "trixie": "13",
    "forky": "14",
    "sid": "sid",
}
RELEASES: dict[str, str] = {v: k for k, v in CODENAMES.items()}

WONT_FIX_STATES = frozenset({"no-dsa", "ignored", "postponed", "end-of-life"})
URGENCIES = ("unimportant", "low", "medium", "high", "not yet assigned", "end-of-life")

_HEADER = re.compile(r"^\[(\d{1,2} \w{3} \d{4})\]\s+(D[SL]A-[\w-]+)\s*(.*)$")
_RELEASE_LINE = re.compile(r"^\[([a-z-]+)\] - (\S+)\s+(<[a-z-]+>|\S+)\s*(?:\((.*)\))?\s*$")


@dataclass
class TrackerEntry:
    """One ``[release] - package version|<state> (note)`` line."""

    release: str  # codename
    package: str
    version: str | None
    state: str  # "fixed", "unfixed", "not-affected", "end-of-life", "no-dsa", ...
    note: str | None = None
    urgency: str | None = None


@dataclass
class TrackerAdvisory:
    """One DSA/DLA block of a tracker list."""

    id: str
    date: str
    package: str
    title: str
    cves: list[str] = field(default_factory=list)
    entries: list[TrackerEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def iso_date(text: str) -> str:
    """``29 Mar 2023`` (the lists' header date) -> ``2023-03-29``, as OSV's ``published`` reads;
    anything else is kept as written."""
    try:
        return dt.datetime.strptime(text.strip(), "%d %b %Y").date().isoformat()
    except ValueError:
        return text


def _urgency(note: str | None) -> str | None:
    if not note:
        return None
    for part in (p.strip() for p in note.split(";")):
        if part in URGENCIES:
            return part
    return None


def _split_header_rest(rest: str) -> tuple[str, str]:
    """``pkg - title`` -> (pkg, title); tolerates a missing package (``- title``) or dash."""
    rest = rest.strip()
    if rest.startswith("-"):
        return "", rest.lstrip("- ").strip()
    package, _, title = rest.partition(" ")
    return package, title.strip().removeprefix("-").strip()


def parse_list(lines: Iterable[str], stats: ImportStats | None = None) -> Iterator[TrackerAdvisory]:
    """Parse ``data/DSA/list`` or ``data/DLA/list``; malformed lines are counted, not fatal."""
    current: TrackerAdvisory | None = None
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if not line[0].isspace():
            m = _HEADER.match(line.strip())
            if current is not None:
                yield current
                current = None
            if m:
                package, title = _split_header_rest(m.group(3))
                current = TrackerAdvisory(m.group(2), m.group(1), package, title)
            elif stats is not None:
                stats.skip("malformed header line", f"line {lineno}")
            continue
        body = line.strip()
        if current is None:
            if stats is not None:
                stats.skip("indented line outside an advisory", f"line {lineno}")
            continue
        if body.startswith("{"):
            current.cves.extend(body.strip("{} ").split())
        elif body.startswith("NOTE:"):
            current.notes.append(body[5:].strip())
        elif body.startswith("["):
            m = _RELEASE_LINE.match(body)
            if not m:
                if stats is not None:
                    stats.skip("malformed release line", f"line {lineno}")
                continue
            release, pkg, what, note = m.groups()
            if what.startswith("<"):
                state, version = what.strip("<>"), None
            else:
                state, version = "fixed", what
            current.entries.append(TrackerEntry(release, pkg, version, state, note, _urgency(note)))
        elif stats is not None:
            stats.skip("unrecognised line", f"line {lineno}")
    if current is not None:
        yield current


def _entry(
    adv: Advisory, release: str, package: str, state: str, version: str | None, **kw: Any
) -> AffectedPackage | None:
    """Build the matchable entry for one (release, package, state)."""
    if state in ("not-affected", "unimportant"):
        return None
    number = CODENAMES.get(release)
    if number is None:
        return None
    events = [{"introduced": "0"}]
    if state == "fixed" and version:
        if version == "0":
            return None  # tracker convention: never affected
        events.append({"fixed": version})
    rng: CompiledRange = compile_range(DPKG, events)
    return AffectedPackage(
        advisory=adv,
        ecosystem=f"Debian:{number}",
        name=package.lower(),
        scheme=DPKG,
        ranges=(rng,),
        purl=f"pkg:deb/debian/{package}?distro=debian-{number}",
        status_hint="wont_fix" if state in WONT_FIX_STATES else None,
        **kw,
    )


def tracker_to_affected(
    advisories: Iterable[TrackerAdvisory], stats: ImportStats
) -> tuple[list[Advisory], list[AffectedPackage]]:
    """Turn parsed DSA/DLA blocks into advisories and matchable entries."""
    out_adv: list[Advisory] = []
    out_aff: list[AffectedPackage] = []
    base = "https://security-tracker.debian.org/tracker/"
    for ta in advisories:
        stats.members += 1
        adv = Advisory(
            id=ta.id,
            related=tuple(ta.cves),
            summary=f"{ta.package} - {ta.title}".strip(" -"),
            published=iso_date(ta.date),
            references=(base + ta.id,),
            source=stats.source,
        )
        n = 0
        for e in ta.entries:
            if e.release not in CODENAMES:
                stats.skip(f"unknown release {e.release}", ta.id)
                continue
            try:
                entry = _entry(adv, e.release, e.package, e.state, e.version, note=e.note, urgency=e.urgency)
            except ValueError:
                stats.skip("malformed entry", ta.id)
                continue
            if entry is None:
                continue
            if entry.ranges[0].broken:
                stats.skip("unparseable fixed version", ta.id)
            out_aff.append(entry)
            n += 1
        stats.loaded += 1
        stats.affected_entries += n
        out_adv.append(adv)
    return out_adv, out_aff


def load_list(path: str | Path) -> tuple[list[Advisory], list[AffectedPackage], ImportStats]:
    """Load a DSA or DLA list file."""
    stats = ImportStats(str(path))
    with open(path, encoding="utf-8", errors="replace") as fh:
        parsed = list(parse_list(fh, stats))
    adv, aff = tracker_to_affected(parsed, stats)
    return adv, aff, stats


def parse_tracker_json(
    data: bytes | dict[str, Any], source: str = "tracker-json"
) -> tuple[list[Advisory], list[AffectedPackage], ImportStats]:
    """Parse the tracker JSON (``/tracker/data/json``): ``{source: {CVE: {releases: {...}}}}``.

    Per release: ``status`` resolved + ``fixed_version`` -> fixed range (``"0"`` means
    never affected); ``open`` -> no fix yet, or will-not-fix when ``nodsa`` is set or
    urgency is ``end-of-life``; ``undetermined`` -> no fix yet.
    """
    stats = ImportStats(source)
    doc = orjson.loads(data) if isinstance(data, bytes) else data
    advisories: dict[str, Advisory] = {}
    affected: list[AffectedPackage] = []
    if not isinstance(doc, dict):
        stats.skip("tracker JSON is not an object", source)
        return [], [], stats
    for pkg, cves in doc.items():
        if not isinstance(cves, dict):
            stats.skip("package entry is not an object", pkg)
            continue
        for cve, info in cves.items():
            stats.members += 1
            if not isinstance(info, dict) or not isinstance(info.get("releases"), dict):
                stats.skip("CVE entry without releases", f"{pkg}/{cve}")
                continue
            adv = advisories.get(cve)
            if adv is None:
                adv = Advisory(
                    id=cve,
                    summary=str(info.get("description") or "")[:500],
                    references=(f"https://security-tracker.debian.org/tracker/{cve}",),
                    source=source,
                )
                advisories[cve] = adv
            for release, rel in info["releases"].items():
                if not isinstance(rel, dict) or release not in CODENAMES:
                    stats.skip("unknown release", release)
                    continue
                status = rel.get("status")
                urgency = rel.get("urgency")
                fixed = rel.get("fixed_version")
                if status == "resolved" and isinstance(fixed, str):
                    state, version = "fixed", fixed
                elif status in ("open", "undetermined"):
                    nodsa = rel.get("nodsa") is not None or rel.get("nodsa_reason")
                    state = "end-of-life" if urgency == "end-of-life" else ("no-dsa" if nodsa else "unfixed")
                    version = None
                else:
                    stats.skip(f"unknown status {status}", f"{pkg}/{cve}")
                    continue
                note = rel.get("nodsa") if isinstance(rel.get("nodsa"), str) else None
                entry = _entry(adv, release, pkg, state, version, note=note, urgency=urgency)
                if entry is not None:
                    affected.append(entry)
                    stats.affected_entries += 1
            stats.loaded += 1
    return list(advisories.values()), affected, stats


# --------------------------------------------------------------------------- security-support


@dataclass
class SupportNotice:
    """A package whose security support ended early or is limited (debian-security-support)."""

    package: str
    kind: str  # "ended" or "limited"
    release: str | None  # Debian release number for "ended", None for "limited"
    last_version: str | None = None
    date: str | None = None
    details: str = ""


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_support_ended(text: str, release: str) -> list[SupportNotice]:
    """Parse ``security-support-ended.debN``: ``package  last-version  [replacement]  date  details``."""
    out: list[SupportNotice] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.split()
        if len(cols) < 2:
            continue
        date_i = next((i for i, c in enumerate(cols) if _DATE.match(c)), None)
        details = " ".join(cols[date_i + 1 :]) if date_i is not None else " ".join(cols[2:])
        out.append(
            SupportNotice(
                package=cols[0],
                kind="ended",
                release=release,
                last_version=cols[1],
                date=cols[date_i] if date_i is not None else None,
                details=details,
            )
        )
    return out


def parse_support_limited(text: str) -> list[SupportNotice]:
    """Parse ``security-support-limited``: ``package  details`` (package may be a regex like ``golang.*``)."""
    out: list[SupportNotice] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pkg, _, details = line.strip().partition(" ")
        out.append(SupportNotice(package=pkg, kind="limited", release=None, details=details.strip()))
    return out


def load_security_support(folder: str | Path) -> list[SupportNotice]:
    """Load every ``security-support-ended.debN`` and ``security-support-limited`` in a folder."""
    base = Path(folder)
    notices: list[SupportNotice] = []
    for p in sorted(base.glob("security-support-ended.deb*")):
        notices.extend(parse_support_ended(p.read_text(encoding="utf-8"), p.name.rsplit(".deb", 1)[1]))
    limited = base / "security-support-limited"
    if limited.exists():
        notices.extend(parse_support_limited(limited.read_text(encoding="utf-8")))
    return notices
