"""SARIF 2.1.0: for code-scanning dashboards (GitHub, GitLab, Azure DevOps) that ingest SARIF.

An image has no source files, so each vulnerability result is located at the package
(``logicalLocations``: the package, its purl) and at the file that installed it when the
inventory knows one, else at the image reference; content findings point at the file in
the layer (``path``, line) or at the config key. VEX-suppressed findings become results
with an ``external``/``accepted`` suppression, so dashboards show them as dismissed with
the justification instead of dropping them. ``security-severity`` (a 0-10 string) is what
GitHub uses to rank security results.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson

from hallmark.report.base import TOOL_NAME, TOOL_URI, ReportFormat, image_name, tool_version

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
# GitHub's bands: >= 9.0 critical, >= 7.0 high, >= 4.0 medium, > 0 low.
_SEVERITY_SCORE = {"critical": 9.5, "high": 8.0, "medium": 5.5, "low": 2.0, "info": 0.0}


def _security_severity(severity: str | None, score: float | None) -> str | None:
    if score is not None:
        return f"{float(score):.1f}"
    if severity in _SEVERITY_SCORE:
        return f"{_SEVERITY_SCORE[severity]:.1f}"
    return None


def _suppressions(item: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    sup = item.get("suppressed")
    if not sup:
        return None
    why = [str(x) for x in (sup.get("status"), sup.get("justification"), sup.get("statement")) if x]
    out: dict[str, Any] = {"kind": "external", "status": "accepted", "justification": "; ".join(why) or "VEX"}
    props = {k: sup[k] for k in ("by", "expires", "document") if sup.get(k)}
    if props:
        out["properties"] = props
    return [out]


def _vuln_rule(f: Mapping[str, Any]) -> dict[str, Any]:
    sev = f.get("severity")
    links = [str(x) for x in f.get("links") or []]
    rule: dict[str, Any] = {
        "id": str(f["advisory_id"]),
        "shortDescription": {"text": str(f.get("summary") or f["advisory_id"])[:1000]},
        "properties": {"tags": ["vulnerability", "security", str(f.get("ecosystem") or "")]},
    }
    if links:
        rule["helpUri"] = links[0]
    ss = _security_severity(sev, f.get("cvss_score"))
    if ss is not None:
        rule["properties"]["security-severity"] = ss
    rule["defaultConfiguration"] = {"level": _LEVEL.get(str(sev), "warning")}
    help_lines = [f"Advisory {f['advisory_id']}"]
    if f.get("aliases"):
        help_lines.append("Aliases: " + ", ".join(map(str, f["aliases"])))
    help_lines += links[:5]
    rule["help"] = {"text": "\n".join(help_lines)}
    return rule


def _vuln_result(f: Mapping[str, Any], image: str) -> dict[str, Any]:
    fixed = ", ".join(map(str, f.get("fixed_versions") or [])) or "none"
    text = (
        f"{f['package']} {f['installed_version']} is affected by {f['advisory_id']}"
        f" ({f.get('severity') or 'unknown severity'}); fixed in: {fixed}; status: {f.get('status')}"
    )
    if f.get("kev"):
        text += "; listed in CISA KEV (known exploited)"
    logical: dict[str, Any] = {"name": str(f["package"]), "kind": "package"}
    if f.get("purl"):
        logical["fullyQualifiedName"] = str(f["purl"])
    result: dict[str, Any] = {
        "ruleId": str(f["advisory_id"]),
        "level": _LEVEL.get(str(f.get("severity")), "warning"),
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {"artifactLocation": {"uri": image}},
                "logicalLocations": [logical],
            }
        ],
        "partialFingerprints": {"hallmark/v1": f"{f['advisory_id']}|{f['package']}|{f['installed_version']}"},
        "properties": {
            k: f[k]
            for k in ("package", "installed_version", "fixed_versions", "status", "severity", "cvss_score", "kev")
            if f.get(k) is not None
        },
    }
    if f.get("layer"):
        result["properties"]["layer"] = f["layer"]
    sup = _suppressions(f)
    if sup:
        result["suppressions"] = sup
    return result


def _content_rule_id(c: Mapping[str, Any]) -> str:
    return f"hallmark/{c.get('kind')}/{c.get('rule_id')}"


def _content_rule(c: Mapping[str, Any]) -> dict[str, Any]:
    sev = str(c.get("severity") or "")
    rule: dict[str, Any] = {
        "id": _content_rule_id(c),
        "name": str(c.get("rule_id")),
        "shortDescription": {"text": str(c.get("title") or c.get("rule_id"))[:1000]},
        "defaultConfiguration": {"level": _LEVEL.get(sev, "warning")},
        "properties": {"tags": ["security", str(c.get("kind"))], "engine": str(c.get("engine") or "")},
    }
    ss = _security_severity(sev, None)
    if ss is not None:
        rule["properties"]["security-severity"] = ss
    if c.get("cis_id"):
        rule["properties"]["cis_id"] = c["cis_id"]
    text = str(c.get("remediation") or c.get("description") or "")
    if text:
        rule["help"] = {"text": text}
    return rule


def _content_result(c: Mapping[str, Any], image: str) -> dict[str, Any]:
    location: dict[str, Any]
    if c.get("path"):
        phys: dict[str, Any] = {"artifactLocation": {"uri": str(c["path"]).lstrip("/") or "/"}}
        if c.get("line"):
            phys["region"] = {"startLine": int(c["line"])}
        location = {"physicalLocation": phys}
    else:
        location = {
            "physicalLocation": {"artifactLocation": {"uri": image}},
            "logicalLocations": [{"name": str(c.get("location") or "config"), "kind": "member"}],
        }
    result: dict[str, Any] = {
        "ruleId": _content_rule_id(c),
        "level": _LEVEL.get(str(c.get("severity")), "warning"),
        "message": {"text": str(c.get("message") or c.get("title") or c.get("rule_id"))},
        "locations": [location],
        "properties": {
            k: c[k]
            for k in ("kind", "severity", "engine", "layer_index", "layer_digest", "status", "removed_in_layer")
            if c.get(k) is not None
        },
    }
    if c.get("fingerprint"):
        result["partialFingerprints"] = {"hallmark/sha256": str(c["fingerprint"])}
    sup = _suppressions(c)
    if sup:
        result["suppressions"] = sup
    return result


def to_sarif(report: Mapping[str, Any]) -> dict[str, Any]:
    """The SARIF log as a dict (one run; rules deduplicated, results in report order)."""
    image = urllib.parse.quote(image_name(report), safe=":/@%+~.-_")
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for f in report.get("findings") or []:
        rules.setdefault(str(f["advisory_id"]), _vuln_rule(f))
        results.append(_vuln_result(f, image))
    for c in report.get("content_findings") or []:
        rules.setdefault(_content_rule_id(c), _content_rule(c))
        results.append(_content_result(c, image))
    index = {rid: i for i, rid in enumerate(rules)}
    for r in results:
        r["ruleIndex"] = index[r["ruleId"]]
    notes = [str(n) for n in report.get("notes") or []]
    invocation: dict[str, Any] = {
        "executionSuccessful": True,
        "properties": {"complete": bool(report.get("complete")), "summary": report.get("summary") or {}},
    }
    if notes:
        invocation["toolExecutionNotifications"] = [{"level": "warning", "message": {"text": n}} for n in notes]
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": TOOL_NAME,
                "informationUri": TOOL_URI,
                "version": tool_version(),
                "rules": list(rules.values()),
            }
        },
        "invocations": [invocation],
        "results": results,
        "properties": {"image": report.get("image") or {}, "advisory_set": report.get("advisory_set")},
    }
    if report.get("generated_at"):
        invocation["endTimeUtc"] = str(report["generated_at"])
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


class SarifFormat(ReportFormat):
    name = "sarif"
    media_type = "application/sarif+json"
    extension = "sarif"

    def render(self, report: Mapping[str, Any]) -> str:
        return orjson.dumps(to_sarif(report), option=orjson.OPT_INDENT_2).decode()
