"""The approval gates on stored reports without a server: content findings (secrets, malware,
configuration checks) go through the severity gate, and a missing or failed content scan never
reads as clean. The full flow against ``hallmark serve`` is in ``test_catalog.py``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from hallmark.catalog.service import CatalogService, Gate
from hallmark.config import CatalogConfig
from hallmark.pipeline.findings import combine, content_by_kind, of_summary

CLEAN_VULNS: dict[str, Any] = {
    "by_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0},
    "complete": True,
    "unsupported_releases": [],
}


class _Store:
    def __init__(self, summary: dict[str, Any], content: dict[str, Any] | None) -> None:
        self.summary, self.content = summary, content

    def get_image(self, repo: str, digest: str) -> dict[str, Any]:
        return {"repository": repo, "digest": digest, "status": "done", "summary": self.summary}

    def get_report(self, repo: str, digest: str, kind: str) -> dict[str, Any] | None:
        return {"doc": self.content} if kind == "content" and self.content is not None else None


def _gates(
    content: dict[str, Any] | None,
    summary: dict[str, Any] | None = None,
    *,
    content_checks: bool = True,
    force: bool = False,
    **catalog: Any,
) -> dict[str, Gate]:
    pipeline = SimpleNamespace(
        meta=None,
        store=_Store(summary or CLEAN_VULNS, content),
        config=SimpleNamespace(
            catalog=CatalogConfig(**catalog), pipeline=SimpleNamespace(content_checks=content_checks)
        ),
    )
    gates = CatalogService(cast(Any, pipeline)).gates("team/app", "sha256:" + "ab" * 32, force)
    return {g.name: g for g in gates}


def _content(*findings: dict[str, Any], skipped: dict[str, int] | None = None) -> dict[str, Any]:
    return {"findings": list(findings), "skipped": {"count": sum((skipped or {}).values()), "by_reason": skipped or {}}}


def _finding(kind: str, severity: str, rule: str = "rule") -> dict[str, Any]:
    return {"kind": kind, "severity": severity, "rule_id": rule, "path": "/app/x"}


def test_three_critical_secrets_fail_the_severity_gate_and_name_the_kind() -> None:
    gates = _gates(_content(*(_finding("secret", "critical") for _ in range(3)), _finding("config", "low")))
    assert not gates["severity"].passed
    assert gates["severity"].detail == (
        "3 unsuppressed finding(s) at or above critical (critical: 3) from exposed secrets 3 (critical: 3)"
    )
    assert all(g.passed for name, g in gates.items() if name != "severity")


def test_only_low_content_findings_pass_a_high_threshold_and_high_config_does_not() -> None:
    low = _content(_finding("config", "low", "no-healthcheck"), _finding("secret", "low"))
    for limit in ("critical", "high"):
        gate = _gates(low, gate_max_severity=limit)["severity"]
        assert gate.passed and gate.detail == f"no unsuppressed finding at or above {limit}", gate
    gate = _gates(_content(_finding("config", "high", "root-user")), gate_max_severity="high")["severity"]
    assert not gate.passed and "configuration checks 1 (high: 1)" in gate.detail
    assert _gates(low, gate_max_severity="low")["severity"].passed is False


def test_vulnerabilities_and_content_add_up_per_kind() -> None:
    summary = {**CLEAN_VULNS, "by_severity": {**CLEAN_VULNS["by_severity"], "critical": 1, "high": 2}, "suppressed": 4}
    gate = _gates(_content(_finding("secret", "critical")), summary, gate_max_severity="high")["severity"]
    assert not gate.passed
    assert gate.detail.startswith("4 unsuppressed finding(s) at or above high (critical: 2, high: 2) from ")
    assert "vulnerabilities 3 (critical: 1, high: 2); exposed secrets 1 (critical: 1)" in gate.detail
    assert gate.detail.endswith("(4 suppressed by VEX)")


def test_malware_counts_as_critical_unless_malware_is_not_blocked() -> None:
    content = _content(_finding("malware", "medium", "yara-rule"))
    gates = _gates(content)
    assert not gates["severity"].passed and "malware 1 (critical: 1)" in gates["severity"].detail
    assert not gates["malware"].passed
    gates = _gates(content, block_malware=False)
    assert gates["severity"].passed and "malware not counted" in gates["severity"].detail
    assert gates["malware"].passed


def test_missing_content_report_is_not_clean_while_content_checks_are_on() -> None:
    gates = _gates(None)
    assert not gates["severity"].passed and "no content-check report" in gates["severity"].detail
    assert not _gates(None, block_malware=False)["severity"].passed  # not only the malware gate
    assert not _gates(None, force=True)["severity"].passed
    gates = _gates(None, content_checks=False)
    assert gates["severity"].passed and "vulnerabilities only" in gates["severity"].detail


def test_scanner_errors_make_the_scan_incomplete_until_forced() -> None:
    failed = _content(skipped={"read-error": 2, "yara-timeout": 1, "binary": 40})
    gate = _gates(failed)["complete_scan"]
    assert not gate.passed
    assert "content checks failed on 3 file(s) (read-error: 2, yara-timeout: 1)" in gate.detail
    assert "force" in gate.detail
    gate = _gates(failed, force=True)["complete_scan"]
    assert gate.passed and gate.detail.startswith("forced by the reviewer: content checks failed on 3 file(s)")
    # Documented limits (binary files are not searched for secrets) are not failures.
    assert _gates(_content(skipped={"binary": 40, "too-large": 1}))["complete_scan"].passed
    assert _gates(failed, require_complete_scan=False)["complete_scan"].passed


@pytest.mark.parametrize("suppressed", [True, False])
def test_content_by_kind_skips_suppressed_and_keeps_unknown_kinds(suppressed: bool) -> None:
    findings: list[dict[str, Any]] = [
        {"kind": "secret", "severity": "high", **({"suppressed": {"by": "x"}} if suppressed else {})},
        {"kind": "malware", "severity": "low"},
        {"kind": "license", "severity": "medium"},
        {"kind": "config"},
    ]
    counts = content_by_kind(findings)
    assert counts["secrets"]["high"] == (0 if suppressed else 1)
    assert counts["malware"]["critical"] == 1 and counts["malware"]["low"] == 0
    assert counts["license"]["medium"] == 1 and counts["config"]["info"] == 1
    total = combine({"critical": 2, "unknown": 1}, counts)
    assert total["by_severity"]["critical"] == 3 and total["by_severity"]["unknown"] == 1
    assert total["total"] == (7 if not suppressed else 6)


def test_summaries_stored_before_the_combined_counts_still_count_content() -> None:
    legacy = {**CLEAN_VULNS, "content": {"total": 3, "by_severity": {"critical": 3}, "by_kind": {"secret": 3}}}
    combined = of_summary(legacy)
    assert combined["by_severity"]["critical"] == 3 and combined["content_checked"] is True
    assert combined["by_kind"]["content"]["critical"] == 3
    assert of_summary(CLEAN_VULNS)["content_checked"] is False
    stored = combine(None, {"secrets": {"high": 1}})
    assert of_summary({**CLEAN_VULNS, "combined": stored}) == stored
