"""Health grades A-F (Red Hat Container Health Index rules): every boundary, the unknown grade,
next-drop dates, what does not count, the stored grade moving with time, and the API end to end."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hallmark.advisories import debian_tracker
from hallmark.advisories.index import AdvisoryIndex
from hallmark.advisories.matcher import match_inventory
from hallmark.config import load_config
from hallmark.lifecycle.health import (
    GradeError,
    add_months,
    assess,
    columns,
    fix_date,
    parse_grades,
    regrade,
    utc_today,
)
from hallmark.lifecycle.health_store import regrade_due
from hallmark.lifecycle.scheduler import Scheduler
from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.model import Distro, Package
from hallmark.pipeline.tables import images
from hallmark.report import apply_vex, parse_vex
from tests.conftest import Server
from tests.ocihelp import push_image
from tests.pipeline.test_pipeline import hallmark_cli, image_files, wait_for

TODAY = dt.date(2025, 6, 15)
CRIT = 9.8
IMP = 7.5


def finding(
    advisory_id: str = "ADV-1",
    score: float | None = CRIT,
    published: str | dt.date | None = None,
    status: str = "fixed",
    **extra: Any,
) -> dict[str, Any]:
    if isinstance(published, dt.date):
        published = published.isoformat() + "T00:00:00Z"
    return {
        "advisory_id": advisory_id,
        "package": "openssl",
        "installed_version": "1.0",
        "fixed_versions": ["1.1"] if status == "fixed" else [],
        "status": status,
        "severity": None,
        "cvss_score": score,
        "published": published,
        **extra,
    }


def report(*findings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "advisory_set": {"id": 7},
        "findings": list(findings),
        "coverage": {"Debian:11": True},
        "unsupported_releases": [],
        **extra,
    }


def days_ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


def grade(*findings: dict[str, Any], on: dt.date = TODAY) -> dict[str, Any]:
    return assess(report(*findings), on)


# --------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize(
    ("age", "expected"),
    [(6, "B"), (7, "B"), (8, "C"), (29, "C"), (30, "C"), (31, "D"), (89, "D"), (90, "D"), (91, "E")],
)
def test_critical_day_boundaries(age: int, expected: str) -> None:
    assert grade(finding(score=CRIT, published=days_ago(age)))["grade"] == expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [(6, "B"), (7, "B"), (8, "B"), (29, "B"), (30, "B"), (31, "C"), (89, "C"), (90, "C"), (91, "D")],
)
def test_important_day_boundaries(age: int, expected: str) -> None:
    assert grade(finding(score=IMP, published=days_ago(age)))["grade"] == expected


@pytest.mark.parametrize(
    ("since", "critical", "important"),
    [
        (dt.date(2024, 6, 16), "E", "D"),  # a day younger than 12 months
        (dt.date(2024, 6, 15), "E", "D"),  # exactly 12 months: "no older than 12 months"
        (dt.date(2024, 6, 14), "F", "F"),  # a day older
    ],
)
def test_twelve_month_boundary(since: dt.date, critical: str, important: str) -> None:
    assert grade(finding(score=CRIT, published=since))["grade"] == critical
    assert grade(finding(score=IMP, published=since))["grade"] == important


def test_twelve_months_are_calendar_months() -> None:
    leap = finding(score=CRIT, published=dt.date(2024, 2, 29))
    assert add_months(dt.date(2024, 2, 29), 12) == dt.date(2025, 2, 28)
    assert grade(leap, on=dt.date(2025, 2, 28))["grade"] == "E"
    assert grade(leap, on=dt.date(2025, 3, 1))["grade"] == "F"


def test_no_fix_at_all_is_a_and_medium_or_low_never_count() -> None:
    doc = grade()
    assert doc["grade"] == "A" and doc["next_drop"] is None and doc["decided_by"] is None
    assert doc["reason"] == "no unapplied Critical or Important fix"
    old = dt.date(2015, 1, 1)
    assert grade(finding(score=6.9, published=old), finding("L", score=2.0, published=old))["grade"] == "A"


def test_vendor_ratings_without_a_score() -> None:
    old = days_ago(100)
    assert grade(finding(score=None, severity="critical", published=old))["grade"] == "E"
    assert grade(finding(score=None, severity="high", published=old))["grade"] == "D"
    assert grade(finding(score=None, urgency="high", published=old))["grade"] == "D"  # Debian urgency
    assert grade(finding(score=None, severity=None, published=old))["grade"] == "A"  # unrated


# --------------------------------------------------------------------------- next drop, deciding finding


def test_next_drop_of_one_fix_is_the_day_after_its_limit() -> None:
    since = days_ago(3)
    doc = grade(finding(score=CRIT, published=since))
    assert doc["grade"] == "B"
    assert doc["next_drop"] == {"grade": "C", "on": (since + dt.timedelta(days=8)).isoformat()}
    assert grade(finding(score=IMP, published=since))["next_drop"] == {
        "grade": "C",
        "on": (since + dt.timedelta(days=31)).isoformat(),
    }
    # Exactly 12 months old: E today, F tomorrow.
    e = grade(finding(score=CRIT, published=dt.date(2024, 6, 15)))
    assert e["next_drop"] == {"grade": "F", "on": "2025-06-16"}
    assert grade(finding(score=CRIT, published=dt.date(2020, 1, 1)))["next_drop"] is None  # F stays F


def test_next_drop_skips_steps_that_do_not_lower_the_image() -> None:
    important = finding("IMP-OLD", score=IMP, published=days_ago(60))  # C until day 90, D on day 91
    critical = finding("CRIT-NEW", score=CRIT, published=days_ago(2))  # B -> C in 6 days (no change), D on day 31
    doc = grade(important, critical)
    assert doc["grade"] == "C"
    assert doc["next_drop"] == {"grade": "D", "on": (TODAY + dt.timedelta(days=29)).isoformat()}
    # The oldest fix of the deciding grade decides.
    assert doc["decided_by"] == {
        "advisory_id": "IMP-OLD",
        "package": "openssl",
        "installed_version": "1.0",
        "fixed_versions": ["1.1"],
        "severity": "important",
        "fix_available_since": days_ago(60).isoformat(),
        "age_days": 60,
    }
    assert "IMP-OLD" in doc["reason"] and "60 days old" in doc["reason"]
    assert doc["unapplied_fixes"] == {"critical": 1, "important": 1}


def test_regrade_on_the_drop_date_matches_a_fresh_grade() -> None:
    findings = [
        finding("A1", score=CRIT, published=days_ago(2)),
        finding("A2", score=IMP, published=days_ago(25)),
        finding("A3", score=IMP, published=days_ago(25)),  # same severity and day: one basis entry
        finding("A4", score=None, status="no_fix_yet", severity="critical", published=days_ago(900)),
    ]
    stored = assess(report(*findings), TODAY)
    assert len(stored["basis"]["fixes"]) == 2
    day = dt.date.fromisoformat(stored["next_drop"]["on"])
    moved = regrade(stored, day)
    assert moved == assess(report(*findings), day)
    assert moved["grade"] == stored["next_drop"]["grade"] == "C"
    for later in (day + dt.timedelta(days=40), day + dt.timedelta(days=400)):
        assert regrade(stored, later) == assess(report(*findings), later)


# --------------------------------------------------------------------------- what does not count


def test_vex_suppressed_findings_do_not_count() -> None:
    old = finding("CVE-2020-0001", score=CRIT, published=dt.date(2020, 1, 1))
    new = finding("CVE-2025-0002", score=IMP, published=days_ago(10))
    vex = parse_vex(
        json.dumps(
            {
                "@context": "https://openvex.dev/ns/v0.2.0",
                "@id": "https://example.test/vex/health",
                "author": "alice@example.test",
                "timestamp": "2025-01-01T00:00:00Z",
                "version": 1,
                "statements": [
                    {
                        "vulnerability": {"name": "CVE-2020-0001"},
                        "status": "not_affected",
                        "justification": "vulnerable_code_not_present",
                    }
                ],
            }
        ),
        "t.json",
    )
    rep = report(old, new, complete=True)
    assert assess(rep, TODAY)["grade"] == "F"
    triaged = apply_vex(rep, [vex], now=dt.datetime(2025, 6, 15, tzinfo=dt.UTC))
    doc = assess(triaged, TODAY)
    assert doc["grade"] == "B" and doc["decided_by"]["advisory_id"] == "CVE-2025-0002"
    assert doc["unapplied_fixes"] == {"critical": 0, "important": 1}


def test_findings_without_a_fix_are_counted_beside_the_grade() -> None:
    doc = grade(
        finding("NOFIX", score=CRIT, status="no_fix_yet", published=dt.date(2019, 1, 1)),
        finding("WONT", score=IMP, status="wont_fix", published=dt.date(2019, 1, 1)),
        finding("LOW", score=3.0, status="no_fix_yet"),
        finding("MAYBE", score=CRIT, status="could_not_compare", published=dt.date(2019, 1, 1)),
    )
    assert doc["grade"] == "A" and doc["next_drop"] is None
    assert doc["without_fix"] == {"total": 3, "critical": 1, "important": 1}
    assert doc["not_compared"] == 1
    assert "3 finding(s) without a fix yet do not count" in doc["reason"]


def test_undated_fix_is_at_least_b_and_never_drops_alone() -> None:
    doc = grade(finding("CVE-X", score=CRIT, published=None))
    assert doc["grade"] == "B" and doc["next_drop"] is None
    assert doc["undated_fixes"] == 1 and doc["decided_by"]["fix_available_since"] is None
    assert "unknown age" in doc["reason"]
    with_dated = grade(finding("CVE-X", score=CRIT), finding("OLD", score=IMP, published=days_ago(45)))
    assert with_dated["grade"] == "C" and with_dated["decided_by"]["advisory_id"] == "OLD"


# --------------------------------------------------------------------------- unknown


def test_no_advisory_data_is_unknown_never_a() -> None:
    doc = assess(report(advisory_set=None), TODAY)
    assert doc["grade"] == "unknown" and doc["next_drop"] is None
    assert "hallmark db update" in doc["reason"]


def test_os_release_without_data_is_unknown_with_the_lower_bound() -> None:
    rep = report(
        finding("PYSEC-1", score=IMP, published=days_ago(45)),
        unsupported_releases=["Debian:12"],
        coverage={"Debian:12": False, "PyPI": True},
    )
    doc = assess(rep, TODAY)
    assert doc["grade"] == "unknown" and doc["at_least"] == "C" and doc["next_drop"] is None
    assert doc["missing_data"] == "no advisory data for Debian:12"
    assert doc["reason"].startswith("no advisory data for Debian:12: fixes for the OS packages are unknown")
    clean = assess(report(unsupported_releases=["Alpine:v3.20"], coverage={"Alpine:v3.20": False}), TODAY)
    assert clean["grade"] == "unknown" and clean["at_least"] == "A"
    # An OS ecosystem the matcher has no release for (rpm images) is just as unknown.
    rhel = assess(report(coverage={"Red Hat": False}), TODAY)
    assert rhel["grade"] == "unknown" and "Red Hat" in rhel["reason"]
    assert regrade(doc, TODAY + dt.timedelta(days=500))["grade"] == "unknown"
    # A language ecosystem without data says nothing about the OS.
    assert assess(report(coverage={"Debian:11": True, "npm": False}), TODAY)["grade"] == "A"


# --------------------------------------------------------------------------- inputs


def test_fix_dates_from_every_feed_format() -> None:
    assert fix_date("2023-02-07T00:00:00Z") == dt.date(2023, 2, 7)
    assert fix_date("2023-02-07T23:30:00-05:00") == dt.date(2023, 2, 8)  # UTC day
    assert fix_date("2023-02-07") == dt.date(2023, 2, 7)
    assert fix_date("29 Mar 2023") == dt.date(2023, 3, 29)
    assert fix_date("soon") is None and fix_date(None) is None and fix_date("") is None


def test_grade_filter_values() -> None:
    assert parse_grades("a, B,unknown,b") == ["A", "B", "unknown"]
    assert parse_grades("") is None and parse_grades(None) is None
    with pytest.raises(GradeError, match="unknown grade 'G'"):
        parse_grades("A,G")


DSA_LIST = """\
[29 Mar 2023] DSA-9001-1 openssl - security update
\t{CVE-2023-9001}
\t[bullseye] - openssl 1.1.1n-0+deb11u5 (high)
"""


def test_debian_list_dates_and_urgency_reach_the_finding() -> None:
    stats = debian_tracker.ImportStats("DSA/list")
    parsed = list(debian_tracker.parse_list(io.StringIO(DSA_LIST), stats))
    adv, aff = debian_tracker.tracker_to_affected(parsed, stats)
    assert adv[0].published == "2023-03-29"
    idx = AdvisoryIndex()
    idx.add(adv, aff, stats)
    pkg = Package("libssl1.1", "1.1.1n-0+deb11u3", "Debian", source_name="openssl")
    res = match_inventory(idx, [pkg], Distro("debian", "11"))
    (f,) = [f.as_dict() for f in res.findings]
    assert f["published"] == "2023-03-29" and f["urgency"] == "high" and f["cvss_score"] is None
    doc = assess({"advisory_set": {"id": 1}, "findings": [f], "coverage": res.coverage}, dt.date(2023, 5, 1))
    assert doc["grade"] == "C"  # Important (Debian urgency high), 33 days old
    assert doc["decided_by"]["fix_available_since"] == "2023-03-29"


# --------------------------------------------------------------------------- stored grades move with time


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[MetadataStore]:
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}", 4)
    migrate(engine)
    yield MetadataStore(engine)
    engine.dispose()


def _put(meta: MetadataStore, repo: str, health: dict[str, Any]) -> None:
    with meta.transaction() as conn:
        conn.execute(
            images.insert().values(
                repo_name=repo, digest="sha256:" + "a" * 64, status="done", updated_at=utcnow(), **columns(health)
            )
        )


def _stored(meta: MetadataStore, repo: str) -> tuple[str, dict[str, Any]]:
    with meta.engine.connect() as conn:
        g, h = conn.execute(
            images.select().with_only_columns(images.c.grade, images.c.health).where(images.c.repo_name == repo)
        ).one()
    return g, json.loads(h)


def test_regrade_due_moves_only_grades_whose_drop_date_arrived(meta: MetadataStore) -> None:
    due = assess(report(finding(score=CRIT, published=days_ago(3))), TODAY)  # B, C on TODAY+5
    later = assess(report(finding(score=IMP, published=days_ago(3))), TODAY)  # B, C on TODAY+28
    _put(meta, "due", due)
    _put(meta, "later", later)
    assert regrade_due(meta, TODAY + dt.timedelta(days=4)) == {"checked": 2, "regraded": 0}
    assert regrade_due(meta, TODAY + dt.timedelta(days=5)) == {"checked": 2, "regraded": 1}
    g, h = _stored(meta, "due")
    assert g == "C" and h["next_drop"] == {"grade": "D", "on": (days_ago(3) + dt.timedelta(days=31)).isoformat()}
    assert _stored(meta, "later")[0] == "B"


def test_grades_job_is_registered_and_runs_from_the_scheduler(meta: MetadataStore) -> None:
    import hallmark.lifecycle.jobs  # noqa: F401  (registers every job)

    real_today = utc_today()
    since = real_today - dt.timedelta(days=10)
    stored = assess(report(finding(score=CRIT, published=since)), since + dt.timedelta(days=1))
    assert stored["grade"] == "B"  # graded 9 days ago; C since 2 days ago
    _put(meta, "img", stored)

    class Ctx:
        config = load_config(environ={})
        blobs = registry = pipeline = None

    ctx = Ctx()
    ctx.meta = meta  # type: ignore[attr-defined]
    results = Scheduler(meta, "t").run_due(ctx, force=True, only={"grades"})  # type: ignore[arg-type]
    assert [(r["job"], r["status"]) for r in results] == [("grades", "ok")]
    assert results[0]["detail"]["regraded"] == 1
    assert _stored(meta, "img")[0] == "C"


# --------------------------------------------------------------------------- end to end


def _osv(rid: str, published: dt.date, vector: str | None, fixed: str | None) -> bytes:
    events: list[dict[str, str]] = [{"introduced": "0"}] + ([{"fixed": fixed}] if fixed else [])
    rec: dict[str, Any] = {
        "id": rid,
        "modified": published.isoformat() + "T00:00:00Z",
        "published": published.isoformat() + "T00:00:00Z",
        "summary": f"openssl - {rid}",
        "affected": [
            {
                "package": {"ecosystem": "Debian:11", "name": "openssl"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }
    if vector:
        rec["severity"] = [{"type": "CVSS_V3", "score": vector}]
    return json.dumps(rec).encode()


CRITICAL_VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
IMPORTANT_VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"  # 7.5


def test_pushed_image_gets_health_and_the_catalog_filters_by_grade(server: Server, tmp_path: Path) -> None:
    today = utc_today()
    crit_since = today - dt.timedelta(days=15)  # Critical, 15 days: C; D on day 31
    imp_since = today - dt.timedelta(days=40)  # Important, 40 days: C (the oldest: decides); D on day 91
    mirror = tmp_path / "mirror" / "osv" / "Debian"
    mirror.mkdir(parents=True)

    def feed(crit: dt.date) -> None:
        with zipfile.ZipFile(mirror / "all.zip", "w") as zf:
            zf.writestr("HM-CRIT-1.json", _osv("HM-CRIT-1", crit, CRITICAL_VECTOR, "1.1.1n-0+deb11u9"))
            zf.writestr("HM-IMP-1.json", _osv("HM-IMP-1", imp_since, IMPORTANT_VECTOR, "1.1.1n-0+deb11u8"))
            zf.writestr("HM-NOFIX-1.json", _osv("HM-NOFIX-1", today - dt.timedelta(days=700), CRITICAL_VECTOR, None))
        r = hallmark_cli(server, "db", "update", "--mirror", str(tmp_path / "mirror"))
        assert r.returncode == 0, r.stderr

    feed(crit_since)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        d11 = push_image(c, "health/bullseye", "v1", files=image_files("11", "bullseye"))
        d12 = push_image(c, "health/bookworm", "v1", files=image_files("12", "bookworm"))
        img = wait_for(c, "health/bullseye", d11)
        assert img["status"] == "done", img
        health = img["health"]
        assert health["grade"] == "C" and img["grade"] == "C"
        assert health["next_drop"] == {"grade": "D", "on": (crit_since + dt.timedelta(days=31)).isoformat()}
        assert health["decided_by"]["advisory_id"] == "HM-IMP-1"
        assert health["decided_by"]["severity"] == "important"
        assert health["decided_by"]["package"] == "libssl1.1"
        assert health["decided_by"]["fix_available_since"] == imp_since.isoformat()
        assert health["without_fix"] == {"total": 1, "critical": 1, "important": 0}
        assert "HM-IMP-1" in health["reason"] and "basis" not in health
        img12 = wait_for(c, "health/bookworm", d12)
        assert img12["health"]["grade"] == "unknown" and "Debian:12" in img12["health"]["reason"]

        def listed(grade: str) -> set[str]:
            r = c.get("/api/v1/catalog", params={"grade": grade})
            assert r.status_code == 200, r.text
            return {e["repository"] for e in r.json()["images"] if e["repository"].startswith("health/")}

        assert listed("C") == {"health/bullseye"}
        assert listed("A,B") == set()
        assert listed("unknown") == {"health/bookworm"}
        assert listed("c,unknown") == {"health/bullseye", "health/bookworm"}
        entries = c.get("/api/v1/catalog", params={"q": "health/"}).json()["images"]
        assert {e["repository"]: e["grade"] for e in entries} == {"health/bullseye": "C", "health/bookworm": "unknown"}
        bad = c.get("/api/v1/catalog", params={"grade": "A,Z"})
        assert bad.status_code == 400 and "unknown grade 'Z'" in bad.text
        r = hallmark_cli(server, "catalog", "list", "--grade", "C")
        assert r.returncode == 0, r.stderr
        line = next(ln for ln in r.stdout.splitlines() if "health/bullseye@" in ln)
        assert line.split()[1] == "C" and "health/bookworm" not in r.stdout

        def wait_listed(grade: str) -> None:
            deadline = time.monotonic() + 120
            while listed(grade) != {"health/bullseye"} and time.monotonic() < deadline:
                time.sleep(0.2)  # the re-match job runs in the server
            assert listed(grade) == {"health/bullseye"}

        # Same findings, older fix date (an advisory update): re-matching moves the stored grade
        # although the findings, and so the report, are unchanged.
        feed(today - dt.timedelta(days=100))
        wait_listed("E")
        health = c.get(f"/api/v1/repositories/health/bullseye/images/{d11}").json()["health"]
        assert health["grade"] == "E" and health["decided_by"]["advisory_id"] == "HM-CRIT-1"
        # Triage changes findings: the stored grade follows at the re-match.
        vex = {
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": "https://example.test/vex/health-e2e",
            "author": "alice@example.test",
            "timestamp": "2025-01-01T00:00:00Z",
            "version": 1,
            "statements": [
                {"vulnerability": {"name": n}, "status": "not_affected", "justification": "component_not_present"}
                for n in ("HM-CRIT-1", "HM-IMP-1")
            ],
        }
        resp = c.post(f"/api/v1/repositories/health/bullseye/images/{d11}/vex", content=json.dumps(vex))
        assert resp.status_code == 201, resp.text
        wait_listed("A")
        health = c.get(f"/api/v1/repositories/health/bullseye/images/{d11}").json()["health"]
        assert health["grade"] == "A" and health["next_drop"] is None
        assert health["without_fix"]["total"] == 1
