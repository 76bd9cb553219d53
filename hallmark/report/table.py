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


_VARIABLE_KINDS = {"env": "ENV", "build-arg": "build arg", "label": "label", "shell": "variable"}


def advisory_label(aset: Mapping[str, Any] | None) -> str:
    """``advisories of DATE (source, ...)``: what a reader can check the data against, not an internal id."""
    if not aset:
        return "NONE"
    date = str(aset.get("date") or aset.get("created_at") or "")[:10] or "unknown date"
    sources = [str(s) for s in aset.get("sources") or []]
    return f"advisories of {date}" + (f" ({', '.join(sources)})" if sources else "")


def where(c: Mapping[str, Any]) -> str:
    """Where a content finding is: the file (and line), or for the image config the variable's
    name (``ENV API_TOKEN``, ``build arg NPM_TOKEN``) and its place, never its value."""
    text = str(c.get("path") or c.get("location") or "")
    if c.get("line") and c.get("path"):
        text += f":{c['line']}"
    extra = c.get("extra") or {}
    name = extra.get("variable")
    if name:
        kind = "build-arg" if c.get("rule_id") == "secret-in-build-arg" else extra.get("variable_kind", "env")
        text = f"{_VARIABLE_KINDS.get(str(kind), str(kind))} {name} ({text})"
    return text


def content_line(content: Mapping[str, Any]) -> str:
    """``Content findings: 3 (secret: 2, config: 1; high: 3)`` from the summary's content counts."""
    kinds = ", ".join(f"{k}: {n}" for k, n in (content.get("by_kind") or {}).items() if n)
    sevs = ", ".join(f"{k}: {n}" for k, n in (content.get("by_severity") or {}).items() if n)
    detail = "; ".join(x for x in (kinds, sevs) if x)
    return f"Content findings: {content.get('total', 0)}" + (f" ({detail})" if detail else "")


def print_report(report: Mapping[str, Any], console: Console) -> None:
    """Print the report to ``console`` (colours when it is a terminal)."""
    summary = report.get("summary") or {}
    console.print(Text(f"Image: {image_name(report)}", style="bold"))
    image = report.get("image") or {}
    distro = image.get("distro") or {}
    if distro:
        console.print(f"OS: {distro.get('pretty_name') or distro.get('id')}  packages: {image.get('package_count')}")
    aset = report.get("advisory_set")
    console.print(Text(f"Advisory data: {advisory_label(aset)}"))
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
            status = str(c.get("status") or "")
            if c.get("status") == "removed" and c.get("removed_in_layer") is not None:
                status = f"removed in layer {c['removed_in_layer']} (still downloadable)"
            t.add_row(
                _sev(c.get("severity")),
                str(c.get("kind")),
                Text(f"{c.get('rule_id')}: {c.get('title')}"),
                Text(where(c)),
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
        console.print(Text(content_line(cs)))
    if aset is None and "findings" in report:
        console.print(Text("No advisory data loaded: this image is NOT known to be clean.", style="bold red"))
    elif not report.get("complete", True):
        console.print(Text("Incomplete: findings may be missing (see warnings above).", style="bold yellow"))
    if report.get("base_image"):
        for line, style in base_lines(report["base_image"]):
            console.print(Text(line, style=style or ""))


def _ref(doc: Mapping[str, Any]) -> str:
    digest = str(doc.get("digest") or "")
    return f"{doc.get('repository') or doc.get('name') or '(not cataloged)'}@{digest[:19]}"


def base_lines(found: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The base image and upgrade advice a catalog gave (``hallmark scan``'s ``base_image``)."""
    where = found.get("catalog") or "the catalog"
    base = found.get("base")
    if not base:
        return [
            (f"Base image: none found in the catalog of {where} (no declared base, no cataloged layer prefix).", None)
        ]
    how = "declared" if base.get("source") == "annotation" else "layer prefix"
    facts = ", ".join(str(x) for x in (base.get("stage"), f"grade {base['grade']}" if base.get("grade") else None) if x)
    head = f"Base image: {_ref(base)}" + (f" ({facts})" if facts else "") + f"; {how}, per {where}"
    advice = found.get("advice")
    if not advice:
        return [(head + ": no upgrade advised.", None)]
    out: list[tuple[str, str | None]] = [
        (head, None),
        ("Upgrade advised: " + "; ".join(advice.get("reasons") or []) + ".", "bold yellow"),
    ]
    for r in advice.get("replacements") or []:
        removes, adds = (r.get("removes") or {}).get("critical_high", 0), (r.get("adds") or {}).get("critical_high", 0)
        mark = " (declared replacement)" if r.get("declared_replacement") else ""
        out.append(
            (f"  consider {_ref(r)}{mark}: removes {removes} critical/high, adds {adds}, grade {r.get('grade')}", None)
        )
    if not advice.get("replacements"):
        out.append(("  no approved image of the same OS family can replace it yet.", None))
    return out


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
