"""The vulnerability report of one inventory against one advisory set (docs/report-schema.md).

Apart from :mod:`hallmark.pipeline.matching` (which stores reports and grades) because
``hallmark scan`` builds the same report with no database: importing this pulls in no
SQLAlchemy, storage or HTTP client (a scan's start-up time is part of its speed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections import Counter
from typing import Any

from hallmark.advisories.index import AdvisoryIndex
from hallmark.advisories.matcher import match_inventory
from hallmark.index import IndexResult

REPORT_SCHEMA = "https://hallmark.dev/schemas/vulnerability-report/v1"
SEVERITIES = ("critical", "high", "medium", "low", "unknown")


def finding_key(f: dict[str, Any]) -> str:
    return f"{f['advisory_id']}|{f['package']}|{f['installed_version']}"


def make_report(
    inv: IndexResult, active: tuple[dict[str, Any], AdvisoryIndex] | None, repo: str, digest: str
) -> dict[str, Any]:
    """The Hallmark JSON vulnerability report (schema in docs/report-schema.md) for one inventory."""
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_at": now,
        "image": {
            "repository": repo,
            "digest": digest,
            "distro": dataclasses.asdict(inv.distro) if inv.distro else None,
            "package_count": len(inv.packages),
            "indexer_version": inv.indexer_version,
        },
    }
    if active is None:
        report.update(
            advisory_set=None,
            findings=[],
            coverage={},
            unsupported_releases=[],
            support_notices=[],
            complete=False,
            notes=["no advisory data loaded: run `hallmark db update`; this image is NOT known to be clean"],
        )
    else:
        meta, idx = active
        res = match_inventory(idx, inv.packages, inv.distro)
        notes = [
            f"no advisory data for {r}: findings for its OS packages are unknown, not absent"
            for r in res.unsupported_releases
        ]
        report.update(
            advisory_set={"id": meta.get("id"), "created_at": str(meta.get("created_at"))},
            findings=[f.as_dict() for f in res.findings],
            coverage=res.coverage,
            unsupported_releases=res.unsupported_releases,
            support_notices=[dataclasses.asdict(n) for n in res.support_notices],
            complete=res.complete,
            notes=notes,
        )
    report["summary"] = summarize(report)
    return report


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    counts = Counter((f.get("severity") or "unknown") for f in report["findings"])
    return {
        "total": len(report["findings"]),
        "by_severity": {s: counts.get(s, 0) for s in SEVERITIES},
        "fixable": sum(1 for f in report["findings"] if f.get("fixed_versions")),
        "kev": sum(1 for f in report["findings"] if f.get("kev")),
        "complete": report["complete"],
        "unsupported_releases": report["unsupported_releases"],
        "advisory_set": (report.get("advisory_set") or {}).get("id"),
    }


def fingerprint(report: dict[str, Any]) -> str:
    """What makes two reports of one image equivalent: the findings and their triage state."""
    keys = sorted(finding_key(f) + ("|suppressed" if f.get("suppressed") else "") for f in report["findings"])
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()
