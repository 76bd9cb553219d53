"""Portal pieces checked without a server: the image page's findings table (the marks a browser test
with no advisory data cannot reach: KEV, VEX suppression, fixed versions), escaping of hostile report
text, and the login redirect target."""

from __future__ import annotations

from hallmark.portal.routes import SEVERITIES, _environment, _safe_next, _sev_key

DIGEST = "sha256:" + "ab" * 32


def _render(findings: list[dict[str, object]]) -> str:
    return (
        _environment()
        .get_template("image.html")
        .render(
            user="admin",
            access=True,
            csrf="t" * 43,
            path="/repositories/a/images/" + DIGEST,
            name="a",
            digest=DIGEST,
            image={"status": "done", "tags": ["v1"], "package_count": 3, "distro": None, "summary": None},
            verification={"passed": True, "signatures": 1, "level": "strict", "error": None},
            findings=sorted(findings, key=_sev_key),
            notes=[],
            content_findings=[],
            downloads=[],
            referrers=[],
            more_referrers=False,
            severities=SEVERITIES,
        )
    )


def test_findings_show_severity_fix_kev_and_suppression() -> None:
    html = _render(
        [
            {
                "advisory_id": "CVE-2024-0001",
                "package": "openssl",
                "installed_version": "1.1.1n",
                "severity": "low",
                "fixed_versions": ["1.1.1w"],
                "status": "fixed",
                "suppressed": {"status": "not_affected", "justification": "vulnerable_code_not_present"},
            },
            {
                "advisory_id": "CVE-2024-0002",
                "package": "zlib",
                "installed_version": "1.2.11",
                "severity": "critical",
                "fixed_versions": [],
                "status": "no_fix_yet",
                "kev": True,
            },
        ]
    )
    assert ">KEV</span>" in html and "suppressed: not_affected" in html and "1.1.1w" in html
    assert '<tr class="suppressed">' in html
    # Critical first, suppressed last, whatever the report order.
    assert html.index("CVE-2024-0002") < html.index("CVE-2024-0001")
    assert "passed" in html


def test_report_text_is_escaped() -> None:
    html = _render(
        [{"advisory_id": "<img src=x onerror=alert(1)>", "package": "p", "installed_version": "1", "status": "fixed"}]
    )
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_login_redirects_only_to_local_paths() -> None:
    assert _safe_next("/repositories/a?x=1") == "/repositories/a?x=1"
    for bad in ("https://evil.example/", "//evil.example", "/\\evil.example", "/\t/evil.example", "", None, "x"):
        assert _safe_next(bad) == "/", bad


def test_login_page_offers_oidc_only_when_configured() -> None:
    login = _environment().get_template("login.html")
    ctx = {"user": None, "access": True, "csrf": "t" * 43, "path": "/login", "error": None, "username": ""}
    assert "/auth/oidc/login?next=/events" in login.render(**ctx, next="/events", oidc=True)
    assert "oidc" not in login.render(**ctx, next="/events", oidc=False)
