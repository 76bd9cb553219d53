"""The interface every report format implements, plus the report facts they all share.

Every format converts FROM the Hallmark JSON report (``hallmark.pipeline.matching.make_report``,
schema in ``docs/report-schema.md``), so a stored report can be re-rendered in any format
without matching again. Suppressed findings (VEX) stay in the document; formats show them
as suppressed and never count them.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from hallmark import __version__

TOOL_NAME = "Hallmark"
TOOL_URI = "https://hallmark.dev"
#: Threshold order for ``--fail-on``; ``unknown``/``None`` severities never cross a threshold.
SEVERITY_RANK: dict[str, int] = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0, "none": 0}
VULN_SEVERITIES = ("critical", "high", "medium", "low", "unknown")
CONTENT_SEVERITIES = ("critical", "high", "medium", "low", "info")


class ReportFormat(ABC):
    """One output format: a pure function of the Hallmark JSON report."""

    name: ClassVar[str]
    media_type: ClassVar[str]
    extension: ClassVar[str]

    @abstractmethod
    def render(self, report: Mapping[str, Any]) -> str:
        """The document as text (JSON formats end without a newline)."""


def tool_version() -> str:
    return str(__version__)


def is_suppressed(item: Mapping[str, Any]) -> bool:
    return bool(item.get("suppressed"))


def active_findings(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Vulnerability findings that count (not suppressed by VEX)."""
    return [f for f in report.get("findings") or [] if not is_suppressed(f)]


def active_content(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [f for f in report.get("content_findings") or [] if not is_suppressed(f)]


def summarize(report: Mapping[str, Any]) -> dict[str, Any]:
    """``summary`` of the report, counting only unsuppressed findings (VEX-suppressed are
    counted separately under ``suppressed``); ``content`` appears when content checks ran."""
    from hallmark.pipeline.vuln_report import summarize as base_summary

    active = active_findings(report)
    summary = base_summary({**report, "findings": active})
    summary["suppressed"] = sum(1 for f in report.get("findings") or [] if is_suppressed(f))
    if "content_findings" in report:
        content = active_content(report)
        sev = Counter(str(f.get("severity") or "info") for f in content)
        summary["content"] = {
            "total": len(content),
            "by_severity": {s: sev.get(s, 0) for s in CONTENT_SEVERITIES},
            "by_kind": dict(sorted(Counter(str(f.get("kind")) for f in content).items())),
        }
    return summary


def threshold_crossed(report: Mapping[str, Any], threshold: str) -> list[dict[str, Any]]:
    """Unsuppressed findings (vulnerability and content) at or above ``threshold``.

    Findings with no known severity are not counted: a threshold is a statement about
    severities, and "unknown" is surfaced in the summary instead.
    """
    if threshold not in SEVERITY_RANK or SEVERITY_RANK[threshold] == 0:
        raise ValueError(f"unknown threshold {threshold!r}: use critical, high, medium or low")
    limit = SEVERITY_RANK[threshold]
    items: Iterable[dict[str, Any]] = [*active_findings(report), *active_content(report)]
    return [f for f in items if SEVERITY_RANK.get(str(f.get("severity") or ""), -1) >= limit]


def image_name(report: Mapping[str, Any]) -> str:
    """``repository@digest`` (or whichever of the two is known)."""
    image = report.get("image") or {}
    repo, digest = image.get("repository") or "", image.get("digest") or ""
    if repo and digest:
        return f"{repo}@{digest}"
    return str(repo or digest or "image")


def image_purl(report: Mapping[str, Any]) -> str:
    """The image as an OCI purl (``pkg:oci/<name>@sha256%3A...?repository_url=<host/path>``)."""
    image = report.get("image") or {}
    repo = str(image.get("repository") or "image")
    base = repo.split("@", 1)[0]
    # drop a tag (a ":" after the last "/"), keep a registry port
    last = base.rsplit("/", 1)
    if ":" in last[-1]:
        base = base[: len(base) - len(last[-1])] + last[-1].split(":", 1)[0]
    name = base.rsplit("/", 1)[-1].lower() or "image"
    purl = f"pkg:oci/{urllib.parse.quote(name, safe='')}"
    digest = image.get("digest")
    if digest:
        purl += "@" + urllib.parse.quote(str(digest), safe="")
    if "/" in base and not base.startswith(("oci:", "docker-archive:")):
        purl += "?repository_url=" + urllib.parse.quote(base, safe="/")
    return purl


def finding_ref(f: Mapping[str, Any]) -> str:
    """Stable id of a vulnerability finding within one report (advisory, package, version)."""
    return f"{f.get('advisory_id')}|{f.get('package')}|{f.get('installed_version')}"


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
