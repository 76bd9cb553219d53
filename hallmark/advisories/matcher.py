"""Match package inventories against an :class:`AdvisoryIndex`.

Rules: OS packages match by ecosystem *and release* (``Debian:11`` from the
distro's ``version_id``) and, for Debian, by *source* package; Go's ``stdlib``
and ``toolchain`` match the toolchain version converted to SemVer; names are
normalised per ecosystem. A version that cannot be ordered gives a
``could_not_compare`` finding, never silence; an OS release without any advisory
data is reported in ``unsupported_releases``, never as clean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hallmark.model import Distro, Package

from .debian_tracker import SupportNotice
from .index import AdvisorySource
from .osv import AffectedPackage, Verdict, normalize_name
from .severity import Rating, resolve
from .versions import UnparseableVersion, ecosystem_base
from .versions.semver import go_toolchain_to_semver

FIXED, WONT_FIX, NO_FIX_YET, COULD_NOT_COMPARE = "fixed", "wont_fix", "no_fix_yet", "could_not_compare"
_SEVERITY_ORDER = {"critical": 4, "high": 3, "medium": 2, "low": 1, "none": 0}


@dataclass
class Finding:
    """One advisory that applies (or may apply: ``could_not_compare``) to one installed package."""

    advisory_id: str
    aliases: list[str]
    package: str
    ecosystem: str  # the advisory ecosystem matched, e.g. "Debian:11"
    installed_version: str
    fixed_versions: list[str]
    status: str  # fixed | wont_fix | no_fix_yet | could_not_compare
    severity: str | None  # see severity.resolve: the first source that rates it
    cvss_score: float | None
    cvss_vector: str | None
    kev: bool
    layer: str | None
    purl: str | None
    links: list[str]
    summary: str = ""
    matched_name: str = ""  # the (source) package name the advisory names
    note: str | None = None
    epss: float | None = None  # highest EPSS probability among the advisory's CVEs, when EPSS is loaded
    published: str | None = None  # the advisory's date (ISO 8601): when the fix became available
    urgency: str | None = None  # the distro tracker's own rating (Debian urgency), when it gives one
    severity_source: str | None = None  # cvss | advisory | debian_urgency | related_cvss; None = unknown
    severity_record: str | None = None  # the record whose score or rating gave the severity

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dict(self.__dict__)


@dataclass
class MatchResult:
    """Findings for one inventory, plus what could not be checked."""

    findings: list[Finding] = field(default_factory=list)
    coverage: dict[str, bool] = field(default_factory=dict)  # ecosystem -> has advisory data
    unsupported_releases: list[str] = field(default_factory=list)
    support_notices: list[SupportNotice] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True only if every package's ecosystem had data and every version compared."""
        return not self.unsupported_releases and all(f.status != COULD_NOT_COMPARE for f in self.findings)


def os_ecosystem(distro: Distro | None) -> str | None:
    """OSV ecosystem for an image's OS: ``Debian:11``, ``Ubuntu:22.04``, ``Alpine:v3.19``."""
    if distro is None or not distro.version_id:
        return None
    did = distro.id.lower()
    ver = distro.version_id
    if did == "debian":
        return f"Debian:{ver.split('.')[0]}"
    if did == "ubuntu":
        return f"Ubuntu:{ver}"
    if did == "alpine":
        return "Alpine:v" + ".".join(ver.split(".")[:2])
    return None


def _match_target(pkg: Package, os_eco: str | None) -> tuple[str, str, str]:
    """(ecosystem to look up, normalised name, version to compare) for one package."""
    base = ecosystem_base(pkg.ecosystem)
    if base in ("Debian", "Ubuntu", "Alpine"):
        eco = os_eco if os_eco and ecosystem_base(os_eco) == base else pkg.ecosystem
        if base in ("Debian", "Ubuntu"):
            name = pkg.source_name or pkg.name
            version = pkg.source_version or pkg.version
        else:
            name, version = pkg.name, pkg.version
        return eco, normalize_name(eco, name), version
    if base == "Go" and pkg.name in ("stdlib", "toolchain"):
        try:
            version = go_toolchain_to_semver(pkg.version)
        except UnparseableVersion:
            version = pkg.version
        return "Go", pkg.name, version
    return pkg.ecosystem, normalize_name(pkg.ecosystem, pkg.name), pkg.version


def _status(entry: AffectedPackage, verdict: Verdict, fixed: list[str]) -> str:
    if verdict is Verdict.UNKNOWN:
        return COULD_NOT_COMPARE
    if entry.status_hint == "wont_fix":
        return WONT_FIX
    return FIXED if fixed else NO_FIX_YET


def _fixed_above(entry: AffectedPackage, keys: dict[str, Any]) -> list[str]:
    """Fixed versions newer than the installed one (all of them if it cannot be ordered)."""
    out: list[str] = []
    for rng in entry.ranges:
        v = keys.get(rng.scheme.name)
        for k, kind, raw in rng.events:
            if kind == 1 and (v is None or k is None or k > v):
                out.append(raw)
    return list(dict.fromkeys(out))


#: One applicable entry for an (ecosystem, name, version): entry, status, fixed versions, aliases, KEV flag,
#: EPSS, rating.
_Hit = tuple[AffectedPackage, str, tuple[str, ...], list[str], bool, float | None, Rating]


def _evaluate(index: AdvisorySource, eco: str, name: str, version: str) -> tuple[_Hit, ...]:
    """Every entry of (eco, name) that applies to ``version`` (or cannot be compared), in index order.

    The result depends only on the index and these three strings, so it is memoised per index:
    images built on the same bases repeat the same package versions, and re-matching then costs
    a dict lookup per package instead of a range evaluation per advisory.
    """
    ck = (eco, name, version)
    hit = index.match_cache.get(ck)
    if hit is not None:
        return hit
    entries = index.lookup(eco, name)
    if not entries:
        index.match_cache[ck] = ()
        return ()
    cache = index.key_cache
    keys: dict[str, Any] = {}
    out: list[_Hit] = []
    for entry in entries:
        for rng in entry.ranges:
            sn = rng.scheme.name
            if sn not in keys:
                kk = (sn, version)
                if kk in cache:
                    keys[sn] = cache[kk]
                else:
                    keys[sn] = cache[kk] = _safe_key(entry, sn, version)
        verdict = entry.evaluate(version, keys)
        if verdict is Verdict.NOT_AFFECTED:
            continue
        adv = entry.advisory
        fixed = _fixed_above(entry, keys)
        aliases, kev_flag, epss, related = index.advisory_info(adv)
        rating = resolve(adv, entry.urgency, related)
        out.append((entry, _status(entry, verdict, fixed), tuple(fixed), aliases, kev_flag, epss, rating))
    result = tuple(out)
    index.match_cache[ck] = result
    return result


def match_inventory(index: AdvisorySource, packages: list[Package], distro: Distro | None = None) -> MatchResult:
    """Match one image's packages; see the module docstring for the rules."""
    result = MatchResult()
    os_eco = os_ecosystem(distro)
    seen: set[tuple[str, str, str, str]] = set()
    for pkg in packages:
        eco, name, version = _match_target(pkg, os_eco)
        covered = result.coverage.get(eco)
        if covered is None:
            covered = result.coverage[eco] = index.covers(eco)
            if not covered and ecosystem_base(eco) in ("Debian", "Ubuntu", "Alpine"):
                result.unsupported_releases.append(eco)
        if not covered:
            continue
        hits = _evaluate(index, eco, name, version)
        for entry, status, fixed, aliases, kev_flag, epss, rating in hits:
            adv = entry.advisory
            ident = (adv.id, eco, name, pkg.name)
            if ident in seen:
                continue
            seen.add(ident)
            result.findings.append(
                Finding(
                    advisory_id=adv.id,
                    aliases=list(aliases),
                    package=pkg.name,
                    ecosystem=eco,
                    installed_version=pkg.version,
                    fixed_versions=list(fixed),
                    status=status,
                    severity=rating.severity,
                    cvss_score=rating.score,
                    cvss_vector=rating.vector,
                    kev=kev_flag,
                    epss=epss,
                    layer=pkg.layer,
                    purl=pkg.purl or entry.purl,
                    links=list(adv.references),
                    summary=adv.summary,
                    matched_name=name,
                    note=entry.note,
                    published=adv.published,
                    urgency=entry.urgency,
                    severity_source=rating.source,
                    severity_record=rating.record,
                )
            )
        if index.has_support() and ecosystem_base(eco) == "Debian" and index.lookup(eco, name):
            release = eco.split(":", 1)[1] if ":" in eco else None
            result.support_notices.extend(index.support_notices(name, release))
    result.findings.sort(key=lambda f: (-_SEVERITY_ORDER.get(f.severity or "", -1), f.package, f.advisory_id))
    return result


def _safe_key(entry: AffectedPackage, scheme_name: str, version: str) -> Any:
    for rng in entry.ranges:
        if rng.scheme.name == scheme_name:
            try:
                return rng.scheme.key(version)
            except UnparseableVersion:
                return None
    return None
