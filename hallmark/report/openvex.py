"""OpenVEX 0.2.0: the image's vulnerability status as VEX statements, one per advisory.

Consumers (other scanners, admission controllers) read it to learn which findings of this
image are ``affected`` (with the upgrade as ``action_statement``), ``under_investigation``
(versions Hallmark could not compare) or, after triage, ``not_affected``/``fixed`` with
the triage's justification. The product is the image (OCI purl with digest); the affected
packages are its ``subcomponents``. Valid against the OpenVEX 0.2.0 JSON schema, which
forbids extra statement fields: Hallmark's expiry therefore goes into ``status_notes``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from hallmark.report.base import TOOL_NAME, ReportFormat, image_purl, tool_version

CONTEXT = "https://openvex.dev/ns/v0.2.0"


def _subcomponent(f: Mapping[str, Any]) -> dict[str, Any]:
    purl = f.get("purl")
    if purl:
        return {"@id": str(purl), "identifiers": {"purl": str(purl)}}
    return {"@id": f"pkg:generic/{f['package']}@{f['installed_version']}"}


def _status(f: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """(OpenVEX status, extra statement fields) for one finding."""
    sup = f.get("suppressed")
    if sup:
        extra: dict[str, str] = {}
        if sup.get("status") == "not_affected":
            # The schema wants exactly one of justification / impact_statement.
            if sup.get("justification"):
                extra["justification"] = str(sup["justification"])
            else:
                extra["impact_statement"] = str(sup.get("statement") or "triaged")
        elif sup.get("statement"):
            extra["action_statement"] = str(sup["statement"])
        notes = f"suppressed by {sup.get('by')}"
        if sup.get("expires"):
            notes += f"; hallmark:valid_until={sup['expires']}"
        extra["status_notes"] = notes
        return str(sup.get("status")), extra
    if f.get("status") == "could_not_compare":
        return "under_investigation", {"status_notes": "installed version could not be compared with the advisory"}
    fixed = [str(v) for v in f.get("fixed_versions") or []]
    if fixed:
        action = f"Upgrade {f['package']} to {' or '.join(fixed)}"
    elif f.get("status") == "wont_fix":
        action = "The distribution will not fix this; mitigate or replace the package"
    else:
        action = "No fixed version yet; mitigate or monitor"
    return "affected", {"action_statement": action}


def to_openvex(report: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenVEX document as a dict."""
    image = image_purl(report)
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for f in report.get("findings") or []:
        status, extra = _status(f)
        key = (str(f["advisory_id"]), status, *sorted(f"{k}={v}" for k, v in extra.items()))
        st = groups.get(key)
        if st is None:
            vuln: dict[str, Any] = {"name": str(f["advisory_id"])}
            aliases = sorted({str(a) for a in f.get("aliases") or [] if a != f["advisory_id"]})
            if aliases:
                vuln["aliases"] = aliases
            st = groups[key] = {
                "vulnerability": vuln,
                "products": [{"@id": image, "identifiers": {"purl": image}, "subcomponents": []}],
                "status": status,
                **extra,
            }
        sub = _subcomponent(f)
        subs = st["products"][0]["subcomponents"]
        if sub not in subs:
            subs.append(sub)
    for st in groups.values():
        if not st["products"][0]["subcomponents"]:
            del st["products"][0]["subcomponents"]
    img = report.get("image") or {}
    doc_id = uuid.uuid5(
        uuid.NAMESPACE_URL, f"https://hallmark.dev/vex/{img.get('digest')}/{report.get('generated_at')}"
    )
    return {
        "@context": CONTEXT,
        "@id": f"https://hallmark.dev/vex/{doc_id}",
        "author": TOOL_NAME,
        "role": "Scanner",
        "timestamp": str(report.get("generated_at") or _now()),
        "version": 1,
        "tooling": f"{TOOL_NAME} {tool_version()}",
        "statements": list(groups.values()),
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class OpenVexFormat(ReportFormat):
    name = "openvex"
    media_type = "application/openvex+json"
    extension = "openvex.json"

    def render(self, report: Mapping[str, Any]) -> str:
        return orjson.dumps(to_openvex(report), option=orjson.OPT_INDENT_2).decode()
