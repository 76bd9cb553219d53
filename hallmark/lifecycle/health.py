"""Health grades A-F, by Red Hat's Container Health Index rules.

Red Hat grades an image by the age of its oldest *unapplied fix* for a Critical or Important
flaw ("Container Health Index grades as used inside the Red Hat Container Catalog",
https://access.redhat.com/articles/2803031); Moderate and Low flaws never count, whatever
their age. The rules, per unapplied fix (the image takes the worst of its fixes):

=========  ======================  ======================
grade      Critical no older than  Important no older than
=========  ======================  ======================
B          7 days                  30 days
C          30 days                 90 days
D          90 days                 12 months
E          12 months               (an Important fix is D up to 12 months, then F)
F          older                   older
=========  ======================  ======================

and ``A`` when there is no unapplied Critical or Important fix at all.

What Hallmark counts, and why:

* An *unapplied fix* is a finding with status ``fixed``: the advisory names a fixed version newer
  than the installed one. Findings without a fix (``no_fix_yet``, ``wont_fix``) and findings whose
  version could not be compared do not lower the grade (nothing can be applied); they are counted
  beside it. VEX-suppressed findings do not count at all.
* Severity: Critical when the CVSS base score is >= 9.0 or the advisory's own rating is
  ``critical``; Important when the score is 7.0-8.9, the rating ``high``, or the Debian tracker's
  urgency ``high`` (the vendor's rating when there is no score).
* The age counts from the day the fix became available: the advisory's ``published`` date (OSV
  ``published``; the DSA/DLA date of the Debian tracker lists, which is the day the fixed package
  reached the security archive). None of the feeds gives a release date per fixed version, so
  the advisory date is the only fix date there is. A fix without any date (Alpine secdb, the
  tracker's per-CVE JSON) has an unknown age: it keeps the image at B at least (a fix exists,
  so never A) and is counted as ``undated_fixes``; it cannot make the grade drop with time.
* "12 months" are calendar months (a fix from 2024-03-15 is no older than 12 months through
  2025-03-15); days are whole UTC days.
* An image whose OS release has no advisory data is graded ``unknown`` with the reason, never
  ``A``: missing data can only hide fixes. ``at_least`` then gives the grade of what was checked.

The stored health document keeps a compact ``basis`` (one representative fix per severity and
date), so the grade can move with time (:func:`regrade`, the daily ``grades`` job, and every read
of the image document) without re-matching the image.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hallmark.advisories.index import OS_ECOSYSTEMS
from hallmark.advisories.versions import ecosystem_base

GRADES = ("A", "B", "C", "D", "E", "F")
UNKNOWN = "unknown"
RULES_URL = "https://access.redhat.com/articles/2803031"
CRITICAL, IMPORTANT = "critical", "important"
_LABEL = {CRITICAL: "Critical", IMPORTANT: "Important"}
_RANK = {g: i for i, g in enumerate(GRADES)}

#: Per severity, in order: (limit, unit, grade while the fix is no older than the limit); past the
#: last limit the fix grades F.
_STEPS: dict[str, tuple[tuple[int, str, str], ...]] = {
    CRITICAL: ((7, "days", "B"), (30, "days", "C"), (90, "days", "D"), (12, "months", "E")),
    IMPORTANT: ((30, "days", "B"), (90, "days", "C"), (12, "months", "D")),
}


class GradeError(ValueError):
    """A grade filter that names no grade (``?grade=X``)."""


def parse_grades(raw: str | Iterable[str] | None) -> list[str] | None:
    """``"A,b, unknown"`` -> ``["A", "B", "unknown"]``; None or empty means no filter."""
    if raw is None:
        return None
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    out: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        value = UNKNOWN if part.lower() == UNKNOWN else part.upper()
        if value not in GRADES and value != UNKNOWN:
            raise GradeError(f"unknown grade {part!r} (known: {', '.join(GRADES)}, {UNKNOWN})")
        if value not in out:
            out.append(value)
    return out or None


# --------------------------------------------------------------------------- dates


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` later, clamped to the month's end (Feb 29 + 12 months = Feb 28)."""
    total = day.month - 1 + months
    year, month = day.year + total // 12, total % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _last_day(since: dt.date, limit: int, unit: str) -> dt.date:
    """The last day on which a fix from ``since`` is still "no older than" the limit."""
    return add_months(since, limit) if unit == "months" else since + dt.timedelta(days=limit)


def fix_date(raw: Any) -> dt.date | None:
    """The day a fix became available from an advisory date (ISO 8601 date or timestamp, or the
    tracker lists' ``29 Mar 2023``); None when absent or unreadable."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    try:
        if len(text) > 10 and text[10] in "Tt ":
            stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            return (stamp.astimezone(dt.UTC) if stamp.tzinfo else stamp).date()
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        pass
    try:
        return dt.datetime.strptime(text, "%d %b %Y").date()
    except ValueError:
        return None


# --------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class Fix:
    """One unapplied Critical or Important fix (``since`` None: the feed gives no date)."""

    severity: str  # critical | important
    since: dt.date | None
    advisory_id: str
    package: str
    installed_version: str = ""
    fixed_versions: tuple[str, ...] = ()

    def grade_on(self, day: dt.date) -> str:
        """This fix's grade on ``day``; an undated fix is B (a fix exists, its age is unknown)."""
        if self.since is None:
            return "B"
        for limit, unit, grade in _STEPS[self.severity]:
            if day <= _last_day(self.since, limit, unit):
                return grade
        return "F"

    def drops(self) -> list[tuple[dt.date, str]]:
        """The days this fix's grade worsens, with the grade it falls to."""
        if self.since is None:
            return []
        steps = _STEPS[self.severity]
        out = []
        for i, (limit, unit, _) in enumerate(steps):
            after = steps[i + 1][2] if i + 1 < len(steps) else "F"
            out.append((_last_day(self.since, limit, unit) + dt.timedelta(days=1), after))
        return out

    def as_doc(self, today: dt.date) -> dict[str, Any]:
        return {
            "advisory_id": self.advisory_id,
            "package": self.package,
            "installed_version": self.installed_version,
            "fixed_versions": list(self.fixed_versions),
            "severity": self.severity,
            "fix_available_since": self.since.isoformat() if self.since else None,
            "age_days": max(0, (today - self.since).days) if self.since else None,
        }


@dataclass(frozen=True)
class Grade:
    grade: str
    decided_by: Fix | None
    next_drop: tuple[str, dt.date] | None


def _worst(grades: Iterable[str]) -> str:
    return max(grades, key=_RANK.__getitem__, default="A")


def _order(f: Fix) -> tuple[Any, ...]:
    """Oldest first, undated last, Critical before Important, then by id (deterministic)."""
    return (f.since is None, f.since or dt.date.max, f.severity != CRITICAL, f.advisory_id, f.package)


def grade_fixes(fixes: Sequence[Fix], today: dt.date) -> Grade:
    """Grade one image from its unapplied Critical/Important fixes on ``today`` (pure)."""
    if not fixes:
        return Grade("A", None, None)

    def on(day: dt.date) -> str:
        return _worst(f.grade_on(day) for f in fixes)

    current = on(today)
    deciding = sorted((f for f in fixes if f.grade_on(today) == current), key=_order)
    next_drop = None
    for day in sorted({d for f in fixes for d, _ in f.drops() if d > today}):
        later = on(day)
        if _RANK[later] > _RANK[current]:
            next_drop = (later, day)
            break
    return Grade(current, deciding[0], next_drop)


def severity_class(finding: Mapping[str, Any]) -> str | None:
    """critical, important or None (Moderate, Low and unrated never count)."""
    score = finding.get("cvss_score")
    label = str(finding.get("severity") or "").lower()
    urgency = str(finding.get("urgency") or "").lower()
    if (isinstance(score, (int, float)) and score >= 9.0) or label == "critical":
        return CRITICAL
    if (isinstance(score, (int, float)) and score >= 7.0) or label == "high" or urgency == "high":
        return IMPORTANT
    return None


def unapplied_fixes(findings: Iterable[Mapping[str, Any]]) -> tuple[list[Fix], dict[str, int]]:
    """The gradable fixes of a report's findings, and the counts of what is shown beside the grade."""
    fixes: list[Fix] = []
    beside = {"without_fix": 0, "without_fix_critical": 0, "without_fix_important": 0, "not_compared": 0}
    for f in findings:
        if f.get("suppressed"):
            continue
        sev = severity_class(f)
        status = f.get("status")
        if status in ("no_fix_yet", "wont_fix"):
            beside["without_fix"] += 1
            if sev:
                beside[f"without_fix_{sev}"] += 1
            continue
        if status == "could_not_compare":
            beside["not_compared"] += 1
            continue
        if status != "fixed" or not f.get("fixed_versions") or sev is None:
            continue
        fixes.append(
            Fix(
                severity=sev,
                since=fix_date(f.get("published")),
                advisory_id=str(f.get("advisory_id") or ""),
                package=str(f.get("package") or ""),
                installed_version=str(f.get("installed_version") or ""),
                fixed_versions=tuple(str(v) for v in f.get("fixed_versions") or ()),
            )
        )
    return fixes, beside


def missing_data(report: Mapping[str, Any]) -> str | None:
    """Why the OS packages could not be checked, or None when advisory data covers them."""
    if report.get("advisory_set") is None:
        return "no advisory data loaded (run `hallmark db update`)"
    missing = list(report.get("unsupported_releases") or [])
    for eco, covered in (report.get("coverage") or {}).items():
        if not covered and ecosystem_base(eco) in OS_ECOSYSTEMS and eco not in missing:
            missing.append(eco)
    if missing:
        return f"no advisory data for {', '.join(sorted(missing))}"
    return None


# --------------------------------------------------------------------------- health documents


def _basis(fixes: Sequence[Fix]) -> list[dict[str, Any]]:
    """One representative fix per (severity, date): all that grading ever needs, kept small."""
    best: dict[tuple[str, dt.date | None], Fix] = {}
    for f in sorted(fixes, key=_order):
        best.setdefault((f.severity, f.since), f)
    return [
        {
            "severity": f.severity,
            "since": f.since.isoformat() if f.since else None,
            "advisory_id": f.advisory_id,
            "package": f.package,
            "installed_version": f.installed_version,
            "fixed_versions": list(f.fixed_versions[:5]),
        }
        for f in best.values()
    ]


def _from_basis(basis: Iterable[Mapping[str, Any]]) -> list[Fix]:
    out = []
    for b in basis:
        if b.get("severity") not in _STEPS:
            continue
        out.append(
            Fix(
                severity=str(b["severity"]),
                since=fix_date(b.get("since")),
                advisory_id=str(b.get("advisory_id") or ""),
                package=str(b.get("package") or ""),
                installed_version=str(b.get("installed_version") or ""),
                fixed_versions=tuple(b.get("fixed_versions") or ()),
            )
        )
    return out


def _reason(g: Grade, today: dt.date, without_fix: int) -> str:
    f = g.decided_by
    if f is None:
        text = "no unapplied Critical or Important fix"
    elif f.since is None:
        text = (
            f"unapplied {_LABEL[f.severity]} fix of unknown age: {f.advisory_id} for {f.package} "
            f"(the advisory feed gives no date; an undated fix counts as at least B)"
        )
    else:
        age = max(0, (today - f.since).days)
        fixed = ", ".join(f.fixed_versions[:3]) or "a newer version"
        text = (
            f"oldest unapplied {_LABEL[f.severity]} fix is {age} day{'s' if age != 1 else ''} old: "
            f"{f.advisory_id} for {f.package} {f.installed_version} (fixed in {fixed}), available since {f.since}"
        )
    if without_fix:
        text += f"; {without_fix} finding(s) without a fix yet do not count"
    return text


def _counts(fixes: Sequence[Fix]) -> dict[str, int]:
    return {
        CRITICAL: sum(1 for f in fixes if f.severity == CRITICAL),
        IMPORTANT: sum(1 for f in fixes if f.severity == IMPORTANT),
        "undated": sum(1 for f in fixes if f.since is None),
    }


def _document(
    fixes: Sequence[Fix],
    counts: Mapping[str, int],
    beside: Mapping[str, int],
    missing: str | None,
    today: dt.date,
    advisory_set: Any,
) -> dict[str, Any]:
    g = grade_fixes(fixes, today)
    doc: dict[str, Any] = {
        "grade": g.grade,
        "reason": _reason(g, today, int(beside.get("without_fix", 0))),
        "next_drop": {"grade": g.next_drop[0], "on": g.next_drop[1].isoformat()} if g.next_drop else None,
        "decided_by": g.decided_by.as_doc(today) if g.decided_by else None,
        "unapplied_fixes": {CRITICAL: int(counts.get(CRITICAL, 0)), IMPORTANT: int(counts.get(IMPORTANT, 0))},
        "undated_fixes": int(counts.get("undated", 0)),
        "without_fix": {
            "total": int(beside.get("without_fix", 0)),
            CRITICAL: int(beside.get("without_fix_critical", 0)),
            IMPORTANT: int(beside.get("without_fix_important", 0)),
        },
        "not_compared": int(beside.get("not_compared", 0)),
        "at_least": None,
        "missing_data": missing,
        "computed_on": today.isoformat(),
        "advisory_set": advisory_set,
        "rules": RULES_URL,
    }
    if missing is not None:
        doc["at_least"] = g.grade
        doc["grade"] = UNKNOWN
        doc["next_drop"] = None
        doc["reason"] = (
            f"{missing}: fixes for the OS packages are unknown, not absent; the packages that were checked "
            f"alone grade {g.grade} ({doc['reason']})"
        )
    return doc


def assess(report: Mapping[str, Any], today: dt.date) -> dict[str, Any]:
    """The health document of one vulnerability report on ``today``, with its ``basis``."""
    fixes, beside = unapplied_fixes(report.get("findings") or [])
    advisory_set = (report.get("advisory_set") or {}).get("id") if report.get("advisory_set") else None
    counts = _counts(fixes)
    doc = _document(fixes, counts, beside, missing_data(report), today, advisory_set)
    doc["basis"] = {"fixes": _basis(fixes), "counts": counts, "beside": beside}
    return doc


def regrade(health: Mapping[str, Any], today: dt.date) -> dict[str, Any]:
    """The same health document on another day (time alone moves grades): no re-match needed."""
    basis = health.get("basis") or {}
    fixes = _from_basis(basis.get("fixes") or [])
    counts = basis.get("counts") or _counts(fixes)
    beside = basis.get("beside") or {}
    doc = _document(fixes, counts, beside, health.get("missing_data"), today, health.get("advisory_set"))
    doc["basis"] = basis
    return doc


def public(health: Mapping[str, Any]) -> dict[str, Any]:
    """The document as the API shows it (without the stored ``basis``)."""
    return {k: v for k, v in health.items() if k != "basis"}


def view(image: Mapping[str, Any], today: dt.date | None = None) -> dict[str, Any]:
    """The ``health`` object of the image document: current on every read, also for images not
    graded yet (``unknown``, with the image status as the reason)."""
    today = today or utc_today()
    stored = image.get("health")
    if isinstance(stored, str):
        stored = orjson.loads(stored)
    if isinstance(stored, Mapping) and stored.get("grade"):
        return public(regrade(stored, today) if stored.get("basis") else stored)
    status = image.get("status") or "unknown"
    return {
        "grade": UNKNOWN,
        "reason": f"not graded yet: the image has no vulnerability report (pipeline status {status})",
        "next_drop": None,
        "decided_by": None,
        "unapplied_fixes": None,
        "undated_fixes": None,
        "without_fix": None,
        "not_compared": None,
        "at_least": None,
        "missing_data": None,
        "computed_on": today.isoformat(),
        "advisory_set": None,
        "rules": RULES_URL,
    }


def columns(health: Mapping[str, Any]) -> dict[str, Any]:
    """``images`` column values for one health document."""
    return {"grade": health["grade"], "health": orjson.dumps(health).decode()}


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
