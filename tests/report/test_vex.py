"""VEX triage: which statements suppress which findings, and when they stop suppressing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from hallmark.report import VexError, apply_vex, parse_vex, threshold_crossed
from tests.report.conftest import RECORD

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def vexdoc(*statements: dict[str, Any], **extra: Any) -> str:
    return json.dumps(
        {
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": "https://example.test/vex/t",
            "author": "alice@example.test",
            "timestamp": "2026-01-01T00:00:00Z",
            "version": 1,
            "statements": list(statements),
            **extra,
        }
    )


def na(name: str = RECORD, **extra: Any) -> dict[str, Any]:
    return {
        "vulnerability": {"name": name},
        "status": "not_affected",
        "justification": "vulnerable_code_not_present",
        **extra,
    }


def django(report: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in report["findings"] if f["advisory_id"] == RECORD)


def triage(report: dict[str, Any], *statements: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return apply_vex(report, [parse_vex(vexdoc(*statements, **extra), "t.json")], now=NOW)


def test_global_statement_suppresses_and_leaves_counts(bullseye_report: dict[str, Any]) -> None:
    out = triage(bullseye_report, na())
    sup = django(out)["suppressed"]
    assert sup["by"] == "alice@example.test"
    assert sup["justification"] == "vulnerable_code_not_present"
    assert sup["expires"] is None and "statement" in sup
    assert out["summary"]["by_severity"]["high"] == 0 and out["summary"]["suppressed"] == 1
    assert out["summary"]["total"] == len(out["findings"]) - 1
    assert threshold_crossed(out, "high") == [] and threshold_crossed(bullseye_report, "high")
    assert len(out["findings"]) == len(bullseye_report["findings"])  # still visible
    assert "suppressed" not in django(bullseye_report)  # input not modified


def test_alias_matches(bullseye_report: dict[str, Any]) -> None:
    assert "suppressed" in django(triage(bullseye_report, na("cve-2025-64458")))
    st = {"vulnerability": {"name": "X-1", "aliases": ["GHSA-qw25-v68c-qjf3"]}, "status": "fixed"}
    assert django(triage(bullseye_report, st))["suppressed"]["status"] == "fixed"


def test_product_by_image_digest(bullseye_report: dict[str, Any]) -> None:
    digest = bullseye_report["image"]["digest"]
    enc = digest.replace(":", "%3A")
    mine = {"@id": f"pkg:oci/app@{enc}?repository_url=example.test/app"}
    other = {"@id": "pkg:oci/app@sha256%3A" + "0" * 64}
    assert "suppressed" in django(triage(bullseye_report, na(products=[mine])))
    assert "suppressed" not in django(triage(bullseye_report, na(products=[other])))
    plain = {"@id": f"example.test/app@{digest}"}
    assert "suppressed" in django(triage(bullseye_report, na(products=[plain])))
    by_repo = {"@id": "pkg:oci/app?repository_url=example.test/app"}
    assert "suppressed" in django(triage(bullseye_report, na(products=[by_repo])))
    wrong_repo = {"@id": "pkg:oci/app?repository_url=elsewhere.test/app"}
    assert "suppressed" not in django(triage(bullseye_report, na(products=[wrong_repo])))


def test_subcomponents_restrict_to_packages(bullseye_report: dict[str, Any]) -> None:
    enc = bullseye_report["image"]["digest"].replace(":", "%3A")
    img = f"pkg:oci/app@{enc}"
    yes = {"@id": img, "subcomponents": [{"@id": "pkg:pypi/Django"}]}
    no = {"@id": img, "subcomponents": [{"@id": "pkg:pypi/flask"}]}
    assert "suppressed" in django(triage(bullseye_report, na(products=[yes])))
    assert "suppressed" not in django(triage(bullseye_report, na(products=[no])))


def test_package_purl_product_with_version(bullseye_report: dict[str, Any]) -> None:
    hit = {"@id": "pkg:pypi/django@4.2.20"}
    miss = {"@id": "pkg:pypi/django@4.2.19"}
    assert "suppressed" in django(triage(bullseye_report, na(products=[hit])))
    assert "suppressed" not in django(triage(bullseye_report, na(products=[miss])))


def test_expiry_extension(bullseye_report: dict[str, Any]) -> None:
    past = triage(bullseye_report, na(valid_until="2026-05-01T00:00:00Z"))
    f = django(past)
    assert "suppressed" not in f and f["vex_expired"]["expires"] == "2026-05-01T00:00:00Z"
    assert past["summary"]["by_severity"]["high"] == 1 and past["vex"]["expired"] == 1
    assert threshold_crossed(past, "high")
    future = triage(bullseye_report, na(valid_until="2026-07-01T00:00:00Z"))
    assert django(future)["suppressed"]["expires"] == "2026-07-01T00:00:00Z"
    notes = triage(bullseye_report, na(status_notes="ok until hallmark:valid_until=2026-05-01T00:00:00Z"))
    assert "vex_expired" in django(notes)
    doc_level = triage(bullseye_report, na(), valid_until="2026-05-01T00:00:00Z")
    assert "vex_expired" in django(doc_level)


def test_latest_statement_wins_and_future_ones_wait(bullseye_report: dict[str, Any]) -> None:
    revoked = triage(
        bullseye_report,
        na(timestamp="2026-02-01T00:00:00Z"),
        {
            "vulnerability": {"name": RECORD},
            "status": "affected",
            "action_statement": "upgrade",
            "timestamp": "2026-03-01T00:00:00Z",
        },
    )
    f = django(revoked)
    assert "suppressed" not in f and f["vex"]["status"] == "affected"
    pending = triage(bullseye_report, na(timestamp="2026-12-01T00:00:00Z"))
    assert "suppressed" not in django(pending)
    assert pending["vex"]["not_yet_in_effect"]


def test_retriage_replaces_old_marks(bullseye_report: dict[str, Any]) -> None:
    once = triage(bullseye_report, na())
    again = apply_vex(once, [], now=NOW)
    assert "suppressed" not in django(again) and again["summary"]["suppressed"] == 0


def test_bad_statements_are_skipped_with_reasons() -> None:
    doc = parse_vex(
        vexdoc(
            {"vulnerability": {"name": "CVE-1"}, "status": "not_affected"},
            {"vulnerability": {"name": "CVE-2"}, "status": "maybe"},
            {"status": "fixed"},
            na("CVE-3", products=[{"hashes": {}}]),
            na("CVE-4", timestamp="yesterday"),
            na("CVE-5"),
        )
    )
    assert [s.vulnerability for s in doc.statements] == ["CVE-5"]
    assert len(doc.warnings) == 6  # CVE-3: the product without id, then the statement
    assert any("without justification" in w for w in doc.warnings)
    assert any("would otherwise apply to everything" in w for w in doc.warnings)


def test_not_openvex_is_an_error() -> None:
    with pytest.raises(VexError):
        parse_vex(b"not json")
    with pytest.raises(VexError):
        parse_vex(json.dumps({"document": {}}))
