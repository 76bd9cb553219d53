"""A finding's severity from every source the loaded data has, and which source gave it.

Feeds rate a vulnerability in different places: an OSV record's own CVSS vector or rating,
the Debian tracker's urgency per release, or a *different* record of the same vulnerability
(a PyPI or npm record aliasing the CVE a DSA fixes). Without looking further than the matched
record, most Debian findings would be ``unknown``. Order, first that says wins:

1. ``cvss``: the matched advisory's own CVSS vector (base score computed with ``cvss``);
2. ``advisory``: the matched advisory's own rating without a vector (a score or label in
   ``database_specific``);
3. ``debian_urgency``: the Debian tracker's urgency for the release matched (the distro's
   own assessment for that release, as Trivy ranks it);
4. ``related_cvss``: the highest-scored CVSS vector (or score) of another loaded record that
   shares an identifier with the advisory (its id, aliases or related CVEs);
5. nothing: ``severity`` null (``unknown``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .osv import Advisory

#: Debian tracker urgency -> severity (trivy-db's mapping; ``*``/``**`` marks are ignored).
#: ``not yet assigned`` and ``end-of-life`` say nothing about severity.
URGENCY_SEVERITY = {"unimportant": "low", "low": "low", "medium": "medium", "high": "high"}


@dataclass(frozen=True, slots=True)
class Rating:
    """A severity with its origin: ``source`` is one of the names in the module docstring."""

    severity: str | None
    source: str | None
    score: float | None = None
    vector: str | None = None
    record: str | None = None  # the record whose data gave it (None for the Debian urgency)


UNKNOWN = Rating(None, None)


def urgency_severity(urgency: str | None) -> str | None:
    """Severity for a Debian urgency, or None when the urgency rates nothing."""
    if not urgency:
        return None
    return URGENCY_SEVERITY.get(urgency.strip().rstrip("*").strip().lower())


def identifiers(adv: Advisory) -> tuple[str, ...]:
    """Names of the vulnerability an advisory is about: its id, aliases and related ids."""
    return tuple(dict.fromkeys((adv.id, *adv.aliases, *adv.related)))


def own_rating(adv: Advisory) -> Rating | None:
    """The advisory's own rating, if its record gives one."""
    if adv.severity is None:
        return None
    source = "cvss" if adv.cvss_vector else "advisory"
    return Rating(adv.severity, source, adv.cvss_score, adv.cvss_vector, adv.id)


def _better(a: Rating, b: Rating | None) -> bool:
    """Highest score first, a vector over a bare score, then the smaller record id (deterministic)."""
    if b is None:
        return True
    ka = (a.score if a.score is not None else -1.0, a.vector is not None, b.record or "")
    kb = (b.score if b.score is not None else -1.0, b.vector is not None, a.record or "")
    return ka > kb


def ratings_by_identifier(advisories: Iterable[Advisory]) -> dict[str, Rating]:
    """Identifier (id or alias) -> the best own rating of any record known by that name.

    Only a record's id and aliases name it here (``related`` ids are other vulnerabilities
    to the record that lists them), and only ratings with a score count: a bare label cannot
    be compared across records.
    """
    out: dict[str, Rating] = {}
    for adv in advisories:
        own = own_rating(adv)
        if own is None or own.score is None:
            continue
        for ident in (adv.id, *adv.aliases):
            if _better(own, out.get(ident)):
                out[ident] = own
    return out


def related_rating(adv: Advisory, by_identifier: dict[str, Rating]) -> Rating | None:
    """The best rating among other records sharing an identifier with ``adv``."""
    best: Rating | None = None
    for ident in identifiers(adv):
        r = by_identifier.get(ident)
        if r is None or r.record == adv.id:
            continue
        if _better(r, best):
            best = r
    if best is None:
        return None
    return Rating(best.severity, "related_cvss", best.score, best.vector, best.record)


def resolve(adv: Advisory, urgency: str | None, related: Rating | None) -> Rating:
    """The rating a finding shows, by the order in the module docstring."""
    own = own_rating(adv)
    if own is not None:
        return own
    label = urgency_severity(urgency)
    if label is not None:
        return Rating(label, "debian_urgency")
    return related if related is not None else UNKNOWN
