"""The terminal table (Rich): what a person running ``hallmark scan`` reads first.

Warnings come first and in colour, because "no advisory data for Debian:12" must not be
mistaken for a clean result; suppressed findings are listed dimmed with who suppressed
them and why, after the ones that count.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hallmark.report.base import ReportFormat, image_name

_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim", "unknown": "dim"}


def _sev(sev: str | None) -> Text:
    s = sev or "unknown"
    return Text(s, style=_STYLE.get(s, ""))


def print_report(report: Mapping[str, Any], console: Console) -> None:
    """Print the report to ``console`` (colours when it is a terminal)."""
    summary = report.get("summary") or {}
    console.print(Text(f"Image: {image_name(report)}", style="bold"))
    image = report.get("image") or {}
    distro = image.get("distro") or {}
    if distro:
        console.print(f"OS: {distro.get('pretty_name') or distro.get('id')}  packages: {image.get('package_count')}")
    aset = report.get("advisory_set")
    console.print(f"Advisory data: {aset.get('id') if aset else 'NONE'}")
    for note in report.get("notes") or []:
        console.print(Text(f"WARNING: {note}", style="bold yellow"))
    if not report.get("complete", True) and not report.get("notes"):
        console.print(Text("WARNING: the result is incomplete (some versions could not be compared)", style="yellow"))
    for w in ((report.get("vex") or {}).get("not_yet_in_effect") or [])[:10]:
        console.print(Text(f"VEX: {w}", style="yellow"))

    findings = list(report.get("findings") or [])
    if findings:
        t = Table(title="Vulnerabilities", show_lines=False, expand=False)
        for col in ("Severity", "Advisory", "Package", "Installed", "Fixed in", "Status", "Notes"):
            t.add_column(col, overflow="fold")
        ordered = sorted(findings, key=lambda f: bool(f.get("suppressed")))
        for f in ordered:
            notes = []
            if f.get("kev"):
                notes.append("KEV")
            if f.get("cvss_score") is not None:
                notes.append(f"CVSS {f['cvss_score']}")
            if f.get("vex_expired"):
                notes.append(f"VEX expired {f['vex_expired'].get('expires')}")
            sup = f.get("suppressed")
            status = str(f.get("status") or "")
            if sup:
                why = sup.get("justification") or sup.get("statement") or ""
                status = f"suppressed: {sup.get('status')} by {sup.get('by')}" + (f" ({why})" if why else "")
            row = [
                _sev(f.get("severity")),
                Text(str(f.get("advisory_id"))),
                Text(str(f.get("package"))),
                Text(str(f.get("installed_version"))),
                Text(", ".join(map(str, f.get("fixed_versions") or [])) or "-"),
                Text(status),
                Text(", ".join(notes)),
            ]
            t.add_row(*row, style="dim" if sup else None)
        console.print(t)
    content = list(report.get("content_findings") or [])
    if content:
        t = Table(title="Content checks", expand=False)
        for col in ("Severity", "Kind", "Rule", "Where", "Layer", "Status"):
            t.add_column(col, overflow="fold")
        for c in content:
            where = str(c.get("path") or c.get("location") or "")
            if c.get("line"):
                where += f":{c['line']}"
            status = str(c.get("status") or "")
            if c.get("status") == "removed" and c.get("removed_in_layer") is not None:
                status = f"removed in layer {c['removed_in_layer']} (still downloadable)"
            t.add_row(
                _sev(c.get("severity")),
                str(c.get("kind")),
                f"{c.get('rule_id')}: {c.get('title')}",
                where,
                "" if c.get("layer_index") is None else str(c["layer_index"]),
                status,
            )
        console.print(t)
    by = summary.get("by_severity") or {}
    line = ", ".join(f"{k}: {v}" for k, v in by.items() if v) or "none"
    total = summary.get("total", len(findings))
    text = f"Vulnerabilities: {total} ({line})"
    if summary.get("suppressed"):
        text += f"; suppressed by VEX: {summary['suppressed']}"
    if summary.get("fixable"):
        text += f"; fixable: {summary['fixable']}"
    console.print(text)
    if "content" in summary:
        cs = summary["content"]
        console.print(f"Content findings: {cs['total']} " + str({k: v for k, v in cs["by_kind"].items()}))
    if aset is None and "findings" in report:
        console.print(Text("No advisory data loaded: this image is NOT known to be clean.", style="bold red"))
    elif not report.get("complete", True):
        console.print(Text("Incomplete: findings may be missing (see warnings above).", style="bold yellow"))


class TableFormat(ReportFormat):
    name = "table"
    media_type = "text/plain; charset=utf-8"
    extension = "txt"

    def __init__(self, width: int = 160) -> None:
        self.width = width

    def render(self, report: Mapping[str, Any]) -> str:
        buf = io.StringIO()
        print_report(report, Console(file=buf, width=self.width, force_terminal=False, color_system=None))
        return buf.getvalue()
