"""CycloneDX 1.6 JSON with ``vulnerabilities`` (a VDR; with VEX analysis for suppressed findings).

Written as plain JSON rather than through cyclonedx-python-lib's model: the report already
holds every value, and the tests validate the output with the library's strict 1.6 JSON
schema validator. Components are the image (``metadata.component``, type ``container``)
and the affected packages; each vulnerability ``affects`` the packages it was found in.
VEX statuses map onto ``analysis`` (``not_affected`` -> state ``not_affected`` with the
nearest CycloneDX justification, ``fixed`` -> ``resolved``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from hallmark.report.base import TOOL_NAME, ReportFormat, image_purl, tool_version

_SEVERITIES = {"critical", "high", "medium", "low", "info", "none", "unknown"}
# OpenVEX justification -> CycloneDX impactAnalysisJustification
_JUSTIFICATION = {
    "component_not_present": "code_not_present",
    "vulnerable_code_not_present": "code_not_present",
    "vulnerable_code_not_in_execute_path": "code_not_reachable",
    "vulnerable_code_cannot_be_controlled_by_adversary": "protected_by_mitigating_control",
    "inline_mitigations_already_exist": "protected_by_mitigating_control",
}


def _method(vector: str | None) -> str:
    if not vector:
        return "other"
    if vector.startswith("CVSS:3.1/"):
        return "CVSSv31"
    if vector.startswith("CVSS:3.0/"):
        return "CVSSv3"
    if vector.startswith("CVSS:4.0/"):
        return "CVSSv4"
    if vector.startswith(("AV:", "(AV:")):
        return "CVSSv2"
    return "other"


def _source(advisory_id: str, links: list[str]) -> dict[str, str]:
    prefix = advisory_id.split("-", 1)[0].upper()
    name = {"CVE": "NVD", "GHSA": "GitHub", "PYSEC": "PyPA", "GO": "Go", "RUSTSEC": "RustSec"}.get(prefix, prefix)
    if prefix in ("DSA", "DLA"):
        name = "Debian"
    out = {"name": name}
    if links:
        out["url"] = links[0]
    return out


def _analysis(sup: Mapping[str, Any]) -> dict[str, Any]:
    if sup.get("status") == "fixed":
        out: dict[str, Any] = {"state": "resolved"}
    else:
        out = {"state": "not_affected"}
        just = _JUSTIFICATION.get(str(sup.get("justification") or ""))
        if just:
            out["justification"] = just
    detail = "; ".join(
        str(x)
        for x in (
            sup.get("statement"),
            f"by {sup['by']}" if sup.get("by") else None,
            f"expires {sup['expires']}" if sup.get("expires") else None,
        )
        if x
    )
    if detail:
        out["detail"] = detail
    return out


def to_cyclonedx(report: Mapping[str, Any]) -> dict[str, Any]:
    """The BOM as a dict."""
    image = report.get("image") or {}
    img_ref = image_purl(report)
    image_component: dict[str, Any] = {
        "type": "container",
        "bom-ref": img_ref,
        "name": str(image.get("repository") or "image"),
        "purl": img_ref,
    }
    if image.get("digest"):
        image_component["version"] = str(image["digest"])
    components: dict[str, dict[str, Any]] = {}
    # One vulnerability per advisory id; several packages may be affected by it.
    vulns: dict[str, dict[str, Any]] = {}
    for f in report.get("findings") or []:
        ref = str(f.get("purl") or f"pkg:generic/{f['package']}@{f['installed_version']}")
        if ref not in components:
            comp: dict[str, Any] = {
                "type": "library",
                "bom-ref": ref,
                "name": str(f["package"]),
                "version": str(f["installed_version"]),
            }
            if f.get("purl"):
                comp["purl"] = str(f["purl"])
            components[ref] = comp
        vid = str(f["advisory_id"])
        v = vulns.get(vid)
        if v is None:
            links = [str(x) for x in f.get("links") or []]
            v = vulns[vid] = {
                "bom-ref": f"vuln:{vid}",
                "id": vid,
                "source": _source(vid, links),
                "affects": [],
            }
            aliases = [str(a) for a in f.get("aliases") or [] if a != vid]
            if aliases:
                v["references"] = [{"id": a, "source": _source(a, [])} for a in aliases]
            sev = str(f.get("severity") or "unknown")
            rating: dict[str, Any] = {"severity": sev if sev in _SEVERITIES else "unknown"}
            if f.get("cvss_score") is not None:
                rating["score"] = float(f["cvss_score"])
            if f.get("cvss_vector"):
                rating["vector"] = str(f["cvss_vector"])
            rating["method"] = _method(f.get("cvss_vector"))
            v["ratings"] = [rating]
            if f.get("summary"):
                v["description"] = str(f["summary"])
            if f.get("fixed_versions"):
                v["recommendation"] = "Upgrade to " + " or ".join(map(str, f["fixed_versions"]))
            if links:
                v["advisories"] = [{"url": u} for u in links[:20]]
            props = [{"name": "hallmark:status", "value": str(f.get("status"))}]
            if f.get("kev"):
                props.append({"name": "hallmark:kev", "value": "true"})
            v["properties"] = props
            if f.get("suppressed"):
                v["analysis"] = _analysis(f["suppressed"])
        if not any(a["ref"] == ref for a in v["affects"]):
            v["affects"].append(
                {"ref": ref, "versions": [{"version": str(f["installed_version"]), "status": "affected"}]}
            )
    bom: dict[str, Any] = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{_serial(report)}",
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": TOOL_NAME, "version": tool_version()}]},
            "component": image_component,
        },
        "components": list(components.values()),
        "vulnerabilities": list(vulns.values()),
    }
    if report.get("generated_at"):
        bom["metadata"]["timestamp"] = str(report["generated_at"])
    props = [{"name": "hallmark:complete", "value": str(bool(report.get("complete"))).lower()}]
    props += [{"name": "hallmark:note", "value": str(n)} for n in report.get("notes") or []]
    bom["metadata"]["properties"] = props
    return bom


def _serial(report: Mapping[str, Any]) -> uuid.UUID:
    """Deterministic per (image, generation time): re-rendering a stored report gives the same BOM."""
    image = report.get("image") or {}
    key = f"{image.get('digest')}|{report.get('generated_at')}|{report.get('advisory_set')}"
    return uuid.uuid5(uuid.NAMESPACE_URL, "https://hallmark.dev/report/" + key)


class CycloneDxFormat(ReportFormat):
    name = "cyclonedx"
    media_type = "application/vnd.cyclonedx+json;version=1.6"
    extension = "cdx.json"

    def render(self, report: Mapping[str, Any]) -> str:
        return orjson.dumps(to_cyclonedx(report), option=orjson.OPT_INDENT_2).decode()
