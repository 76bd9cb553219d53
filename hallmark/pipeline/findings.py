"""One severity count per image over every kind of finding, shared by the catalog gate, the
image API and the portal.

The vulnerability summary counts advisories only, so an image whose problems are leaked
secrets or malware read "0 critical" everywhere but in its content report (and passed the
approval gate). ``combine`` merges the kinds: vulnerabilities as the vulnerability summary
counts them (VEX-suppressed excluded), exposed secrets and configuration checks by their
severity, malware always as critical (a known-bad file is never a minor problem), and keeps
the per-kind counts so a reader can tell which kind a number comes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hallmark.report.base import SEVERITY_RANK

SEVERITIES = ("critical", "high", "medium", "low", "info", "unknown")
VULNERABILITIES = "vulnerabilities"
# content-report ``kind`` -> key in ``by_kind``
CONTENT_KINDS = {"secret": "secrets", "malware": "malware", "config": "config"}
KIND_LABELS = {
    VULNERABILITIES: "vulnerabilities",
    "secrets": "exposed secrets",
    "malware": "malware",
    "config": "configuration checks",
    "content": "content checks",  # summaries written before the per-kind split (see ``of_summary``)
}
# Skip reasons that mean a scanner failed on a file, unlike the documented limits (binary files
# for the secret rules, files over the size limits): the content scan is incomplete.
SCAN_ERRORS = frozenset({"read-error", "internal-error", "yara-error", "yara-timeout", "clamd-error"})


def _zero() -> dict[str, int]:
    return dict.fromkeys(SEVERITIES, 0)


def _counts(by: Mapping[str, Any] | None) -> dict[str, int]:
    out = _zero()
    for sev, n in (by or {}).items():
        key = str(sev) if str(sev) in out else "unknown"
        out[key] += int(n or 0)
    return out


def content_by_kind(findings: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Unsuppressed content findings per kind and severity (malware always critical)."""
    out = {kind: _zero() for kind in CONTENT_KINDS.values()}
    for f in findings:
        if f.get("suppressed"):
            continue
        raw = str(f.get("kind") or "unknown")
        kind = CONTENT_KINDS.get(raw, raw)  # a kind this version does not know is still counted
        sev = "critical" if kind == "malware" else str(f.get("severity") or "info")
        counts = out.setdefault(kind, _zero())
        counts[sev if sev in counts else "unknown"] += 1
    return out


def combine(
    vulnerabilities: Mapping[str, Any] | None, content: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """``{total, by_severity, by_kind, content_checked}`` from the vulnerability ``by_severity``
    and ``content_by_kind`` (None: no content report, so nothing is known about content)."""
    by_kind = {VULNERABILITIES: _counts(vulnerabilities)}
    for kind, counts in (content or {}).items():
        by_kind[str(kind)] = _counts(counts)
    total = _zero()
    for counts in by_kind.values():
        for sev, n in counts.items():
            total[sev] += n
    return {
        "total": sum(total.values()),
        "by_severity": total,
        "by_kind": by_kind,
        "content_checked": content is not None,
    }


def content_part(combined: Mapping[str, Any] | None) -> dict[str, dict[str, int]] | None:
    """The content kinds of a combined count (to recombine with new vulnerability counts)."""
    if not combined or not combined.get("content_checked"):
        return None
    return {k: dict(v) for k, v in (combined.get("by_kind") or {}).items() if k != VULNERABILITIES}


def of_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The combined counts of a stored image summary.

    Summaries written before ``combined`` existed have only the content report's overall
    ``by_severity``: it is counted as kind ``content`` (malware at its rule's severity) until
    the next match or re-match stores the exact split.
    """
    if isinstance(summary.get("combined"), Mapping):
        return dict(summary["combined"])
    content = summary.get("content")
    part = {"content": content.get("by_severity") or {}} if isinstance(content, Mapping) else None
    return combine(summary.get("by_severity"), part)


def at_or_above(combined: Mapping[str, Any], limit: str, skip: Iterable[str] = ()) -> dict[str, dict[str, int]]:
    """Per kind, the non-zero counts at or above ``limit`` (unknown severities never count)."""
    floor = SEVERITY_RANK[limit]
    skipped = set(skip)
    out: dict[str, dict[str, int]] = {}
    for kind, counts in (combined.get("by_kind") or {}).items():
        if kind in skipped:
            continue
        over = {s: int(n) for s, n in counts.items() if n and SEVERITY_RANK.get(s, -1) >= floor}
        if over:
            out[kind] = over
    return out


def scan_errors(content_report: Mapping[str, Any] | None) -> dict[str, int]:
    """Files a content scanner failed on, by reason (empty: the scan finished everywhere it should)."""
    by_reason = ((content_report or {}).get("skipped") or {}).get("by_reason") or {}
    return {str(r): int(n) for r, n in by_reason.items() if r in SCAN_ERRORS and n}
