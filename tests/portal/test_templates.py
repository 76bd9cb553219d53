"""Portal pieces checked without a server: the image page's findings table (the marks a browser test
with no advisory data cannot reach: KEV, VEX suppression, fixed versions), escaping of hostile report
text, and the login redirect target."""

from __future__ import annotations

from hallmark.access.model import safe_next
from hallmark.portal.routes import SEVERITIES, severity_key
from hallmark.portal.session import environment

DIGEST = "sha256:" + "ab" * 32


def _render(findings: list[dict[str, object]]) -> str:
    return (
        environment()
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
            findings=sorted(findings, key=severity_key),
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
    assert safe_next("/repositories/a?x=1") == "/repositories/a?x=1"
    for bad in ("https://evil.example/", "//evil.example", "/\\evil.example", "/\t/evil.example", "", None, "x"):
        assert safe_next(bad) == "/", bad


def test_login_page_offers_oidc_only_when_configured() -> None:
    login = environment().get_template("login.html")
    ctx = {"user": None, "access": True, "csrf": "t" * 43, "path": "/login", "error": None, "username": ""}
    assert "/auth/oidc/login?next=/events" in login.render(**ctx, next="/events", oidc=True)
    assert "oidc" not in login.render(**ctx, next="/events", oidc=False)


def test_only_web_urls_become_links() -> None:
    from hallmark.portal.image_extras import commit_link, web_link

    assert web_link("javascript:alert(1)") is None and web_link("git@github.com:a/b.git") is None
    assert commit_link("https://github.com/a/b.git", "abc123") == "https://github.com/a/b/commit/abc123"
    assert commit_link("https://github.com/a/b", "../../evil") is None
    assert commit_link("ssh://github.com/a/b", "abc123") is None


def test_chart_scales_points_and_keeps_one_line_per_severity() -> None:
    import datetime as dt

    from hallmark.portal.image_extras import CHART_H, CHART_PAD, chart

    t = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    doc = chart([(t, {"critical": 4, "high": 2}), (t + dt.timedelta(days=1), {"critical": 0, "high": 2})])
    assert (
        doc is not None
        and doc["top"] == 4
        and [x["severity"] for x in doc["lines"]]
        == [
            "critical",
            "high",
            "medium",
            "low",
        ]
    )
    crit = doc["lines"][0]["points"].split()
    assert crit[0].endswith(f",{float(CHART_PAD)}") and crit[1].endswith(f",{float(CHART_H - CHART_PAD)}")
    assert chart([]) is None


def test_vex_form_becomes_a_valid_openvex_statement_with_expiry() -> None:
    from hallmark.portal.actions import vex_document
    from hallmark.report.vex import parse_vex

    form = {"status": "not_affected", "justification": "vulnerable_code_not_present", "expires": "2099-01-31"}
    doc = parse_vex(vex_document("a", DIGEST, "CVE-2024-1", form, "admin"), source="t")
    (st,) = doc.statements
    assert st.vulnerability == "CVE-2024-1" and st.status == "not_affected"
    assert st.valid_until is not None and st.valid_until.year == 2099


def test_sizes_read_like_people_write_them() -> None:
    from hallmark.portal.session import human_bytes

    assert [human_bytes(v) for v in (None, 298, 2048, 5 * 1024**3)] == ["", "298 B", "2.0 KiB", "5.0 GiB"]


def test_catalog_pages_link_to_their_neighbours_with_the_filters() -> None:
    card = {
        "repository": "team/app",
        "digest": DIGEST,
        "stage": "approved",
        "grade": "A",
        "image_status": "done",
        "tags": ["v1"],
    }
    html = (
        environment()
        .get_template("catalog.html")
        .render(
            user="admin",
            access=True,
            csrf="t" * 43,
            path="/catalog",
            cards=[card],
            total=150,
            shown=60,
            number=2,
            pages=3,
            query_string="package=openssl&stage=approved",
            filters={"package": "openssl", "stage": "approved"},
            error=None,
            stages=("approved",),
            grades=("A",),
            eol_choices=(),
            host="registry.example",
        )
    )
    assert 'href="/catalog?package=openssl&amp;stage=approved&amp;page=1" rel="prev"' in html
    assert 'href="/catalog?package=openssl&amp;stage=approved&amp;page=3" rel="next"' in html
    assert "page 2 of 3" in html
    assert f'value="docker pull registry.example/team/app@{DIGEST}"' in html


def test_push_mirror_pages_name_the_local_repository_as_the_source() -> None:
    import dataclasses
    import datetime as dt

    from hallmark.mirror.definitions import Mirror, TagFilter
    from hallmark.portal.admin_mirrors import mirror_view

    now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    pull = Mirror(
        1,
        "in",
        "remote.example",
        "lib/app",
        "local/app",
        insecure=False,
        username=None,
        has_password=False,
        tags=TagFilter.parse(None, None),
        platforms=None,
        interval_seconds=3600,
        cron=None,
        copy_referrers=True,
        robot=None,
        timeout_seconds=60.0,
        enabled=True,
        next_run_at=None,
        created_by="admin",
        created_at=now,
    )
    push = dataclasses.replace(pull, id=2, name="out", source_repository="prod/app", direction="push")
    env = environment()
    base = {"user": "admin", "access": True, "csrf": "t" * 43, "path": "/admin/mirrors"}
    rows = [dict(mirror_view(m), last_run=None) for m in (pull, push)]
    html = env.get_template("mirrors.html").render(**base, mirrors=rows)
    pull_row, push_row = html.split('data-mirror="in"')[1].split('data-mirror="out"')
    assert pull_row.index("remote.example/lib/app") < pull_row.index("local/app") and "every 1 h" in pull_row
    assert push_row.index("local/app") < push_row.index("remote.example/prod/app") and "(push)" in push_row
    page = env.get_template("mirror.html").render(**base, mirror=mirror_view(push), runs=[], detail=None, queued=None)
    facts = page.split('id="mirror-definition"')[1]
    assert facts.index("local/app") < facts.index("remote.example/prod/app") and "(this registry)" in facts
