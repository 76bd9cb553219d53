"""In-memory advisory index: affected entries by (ecosystem, normalised name).

Built once per advisory import; matching then costs one dict lookup per package
plus key comparisons. It also records which OS releases have *any* data, so the
matcher can say "no advisory data for Debian:12" instead of implying clean.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import alpine, debian_tracker
from .debian_tracker import SupportNotice
from .kev import KevCatalog, load_kev
from .osv import Advisory, AffectedPackage, ImportStats, load_osv_zip
from .severity import Rating, ratings_by_identifier, related_rating
from .versions import ecosystem_base

#: Ecosystems whose release suffix matters: data for Debian:11 says nothing about Debian:12.
OS_ECOSYSTEMS = frozenset({"Debian", "Ubuntu", "Alpine", "Wolfi", "Red Hat", "Rocky Linux", "AlmaLinux"})

#: What matching needs per advisory beyond its record: aliases and related ids, KEV flag,
#: highest EPSS, and the best rating of another record of the same vulnerability.
AdvisoryInfo = tuple[list[str], bool, float | None, Rating | None]


class AdvisorySource(Protocol):
    """What :func:`hallmark.advisories.matcher.match_inventory` reads: the in-memory
    :class:`AdvisoryIndex` (server) or the compiled on-disk form (``compiled.CompiledIndex``)."""

    key_cache: dict[tuple[str, str], Any]
    match_cache: dict[tuple[str, str, str], tuple[Any, ...]]

    def covers(self, ecosystem: str) -> bool: ...

    def lookup(self, ecosystem: str, name: str) -> Sequence[AffectedPackage]: ...

    def advisory_info(self, adv: Advisory) -> AdvisoryInfo: ...

    def has_support(self) -> bool: ...

    def support_notices(self, package: str, release: str | None) -> list[SupportNotice]: ...


def covered(ecosystems: set[str], ecosystem: str) -> bool:
    """Whether ``ecosystems`` (those with data) cover ``ecosystem``; release-specific for OS ecosystems."""
    if ecosystem in ecosystems:
        return True
    if ecosystem_base(ecosystem) in OS_ECOSYSTEMS:
        return False
    return any(ecosystem_base(e) == ecosystem for e in ecosystems)


@dataclass
class AdvisoryIndex:
    """All loaded advisories, ready for matching."""

    by_package: dict[tuple[str, str], list[AffectedPackage]] = field(default_factory=lambda: defaultdict(list))
    advisories: dict[str, Advisory] = field(default_factory=dict)
    ecosystems: set[str] = field(default_factory=set)
    kev: KevCatalog | None = None
    support: list[SupportNotice] = field(default_factory=list)
    imports: list[ImportStats] = field(default_factory=list)
    _seen: dict[tuple[str, str, str], AffectedPackage] = field(default_factory=dict)
    #: (scheme name, version) -> sort key (None = unparseable), shared by every lookup
    key_cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    _adv_info: dict[int, AdvisoryInfo] = field(default_factory=dict)  # by id() of the (kept) Advisory object
    _ratings: dict[str, Rating] | None = None
    epss: dict[str, float] = field(default_factory=dict)  # CVE -> exploitation probability (FIRST EPSS)
    #: (ecosystem, name, version) -> the entries that apply, evaluated once (see matcher.match_inventory)
    match_cache: dict[tuple[str, str, str], tuple[Any, ...]] = field(default_factory=dict)
    _support_by_name: dict[str, list[SupportNotice]] | None = None
    _support_patterns: list[tuple[re.Pattern[str], SupportNotice]] = field(default_factory=list)
    _support_cache: dict[tuple[str, str | None], list[SupportNotice]] = field(default_factory=dict)

    def add(self, advisories: list[Advisory], affected: list[AffectedPackage], stats: ImportStats) -> None:
        """Add one source's advisories; an (advisory, ecosystem, package) already present is kept once.

        A duplicate still lends its Debian urgency to the kept entry: the OSV conversion of a DSA
        drops the tracker's ``(low)``/``(high)`` notes, which rate the finding for that release.
        """
        for adv in advisories:
            self.advisories.setdefault(adv.id, adv)
        for entry in affected:
            ident = (entry.advisory.id, entry.ecosystem, entry.name)
            kept = self._seen.get(ident)
            if kept is not None:
                if kept.urgency is None and entry.urgency is not None:
                    kept.urgency = entry.urgency
                continue
            self._seen[ident] = entry
            self.by_package[(entry.ecosystem, entry.name)].append(entry)
            self.ecosystems.add(entry.ecosystem)
        self.imports.append(stats)

    def covers(self, ecosystem: str) -> bool:
        """Whether any advisory data exists for this ecosystem (release-specific for OS ecosystems)."""
        return covered(self.ecosystems, ecosystem)

    def lookup(self, ecosystem: str, name: str) -> list[AffectedPackage]:
        """Entries for one normalised package name."""
        return self.by_package.get((ecosystem, name), [])

    def advisory_info(self, adv: Advisory) -> AdvisoryInfo:
        """Aliases, KEV flag, EPSS and related-record rating of one advisory (memoised)."""
        info = self._adv_info.get(id(adv))
        if info is None:
            if self._ratings is None:
                self._ratings = ratings_by_identifier(self.advisories.values())
            cves = adv.cves
            info = self._adv_info[id(adv)] = (
                list(dict.fromkeys((*adv.aliases, *adv.related))),
                self.kev is not None and any(c in self.kev.entries for c in cves),
                max((self.epss[c] for c in cves if c in self.epss), default=None),
                related_rating(adv, self._ratings),
            )
        return info

    def has_support(self) -> bool:
        """Whether debian-security-support tables are loaded."""
        return bool(self.support)

    def support_notices(self, package: str, release: str | None) -> list[SupportNotice]:
        """debian-security-support notices for a Debian source package (memoised per index)."""
        ck = (package, release)
        hit = self._support_cache.get(ck)
        if hit is not None:
            return hit
        if self._support_by_name is None:
            self._support_by_name = defaultdict(list)
            self._support_patterns = []
            for n in self.support:
                if n.kind == "limited" and any(c in n.package for c in "*?[]+"):
                    self._support_patterns.append((re.compile(n.package), n))
                else:
                    self._support_by_name[n.package].append(n)
        out = [n for n in self._support_by_name.get(package, ()) if n.kind == "limited" or n.release == release]
        out.extend(n for pat, n in self._support_patterns if pat.fullmatch(package))
        self._support_cache[ck] = out
        return out


def load_snapshot(data_dir: str | Path, on_loaded: Callable[[Path], None] | None = None) -> AdvisoryIndex:
    """Load every feed of a data folder laid out like ``shared/data`` (or a mirror of the live feeds).

    ``on_loaded`` is told each advisory file once it is in (``hallmark db update`` draws a bar from it).
    """
    base = Path(data_dir)
    idx = AdvisoryIndex()
    loaded = on_loaded or (lambda _path: None)
    for zpath in sorted(base.glob("osv/*/all.zip")):
        res = load_osv_zip(zpath)
        idx.add(res.advisories, res.affected, res.stats)
        loaded(zpath)
    tracker = base / "debian" / "security-tracker" / "data"
    for name in ("DSA", "DLA"):
        p = tracker / name / "list"
        if p.exists():
            idx.add(*debian_tracker.load_list(p))
            loaded(p)
    tracker_json = tracker.parent / "tracker.json"
    if tracker_json.exists():  # production feed: the tracker's full JSON export
        idx.add(*debian_tracker.parse_tracker_json(tracker_json.read_bytes(), str(tracker_json)))
        loaded(tracker_json)
    for p in sorted(base.glob("alpine/secdb/*/*.json")):
        idx.add(*alpine.load_secdb(p))
        loaded(p)
    support = base / "debian" / "security-support"
    if support.is_dir():
        idx.support = debian_tracker.load_security_support(support)
    epss = base / "epss" / "epss_scores-current.csv.gz"
    if epss.exists():
        from .epss import load_epss

        idx.epss = load_epss(epss)
    kev = base / "kev" / "known_exploited_vulnerabilities.json"
    if kev.exists():
        idx.kev = load_kev(kev)
    return idx
