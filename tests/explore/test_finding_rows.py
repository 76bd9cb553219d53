"""image_findings / advisory_aliases: one row per finding, rewritten with the report, gone with the
image, back-filled for reports stored before the rows existed."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.pipeline.finding_rows import (
    backfill,
    missing_rows,
    replace_findings,
    rows_fingerprint,
    severity_of,
    stored_fingerprints,
)
from hallmark.pipeline.store import PipelineStore
from hallmark.pipeline.tables import advisory_aliases, image_findings, images
from tests.explore.graph import finding

DIGEST = "sha256:" + "a" * 64


def rows(meta: MetadataStore) -> list[dict[str, Any]]:
    q = select(image_findings).order_by(image_findings.c.advisory_id)
    with meta.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def aliases(meta: MetadataStore) -> set[tuple[str, str]]:
    with meta.engine.connect() as conn:
        return {(r[0], r[1]) for r in conn.execute(select(advisory_aliases))}


def test_one_row_per_finding_with_ranks_flags_and_aliases(fresh: MetadataStore) -> None:
    report = {
        "findings": [
            finding("CVE-1", "critical", fixed=["2"], kev=True),
            finding("DSA-1", "HIGH", aliases=["CVE-2", "DSA-1"]),
            finding("CVE-3", "medium", suppressed=True),
            finding("CVE-4", "low"),
            finding("CVE-5", None),
            finding("CVE-6", "none"),
        ]
    }
    assert replace_findings(fresh, "app", DIGEST, report) == 6
    got = {r["advisory_id"]: r for r in rows(fresh)}
    assert {a: (r["severity"], r["severity_rank"]) for a, r in got.items()} == {
        "CVE-1": ("critical", 4),
        "DSA-1": ("high", 3),
        "CVE-3": ("medium", 2),
        "CVE-4": ("low", 1),
        "CVE-5": ("unknown", 0),
        "CVE-6": ("unknown", 0),
    }
    assert got["CVE-1"]["kev"] and got["CVE-1"]["fix_available"] and not got["CVE-1"]["suppressed"]
    assert not got["DSA-1"]["kev"] and not got["DSA-1"]["fix_available"]
    assert got["CVE-3"]["suppressed"]
    assert got["CVE-1"]["version"] == "3.0.2-0ubuntu1" and got["CVE-1"]["ecosystem"] == "Debian:12"
    assert aliases(fresh) == {("CVE-2", "DSA-1")}  # an id is not its own alias


def test_replace_rewrites_and_aliases_are_kept_once(fresh: MetadataStore) -> None:
    replace_findings(fresh, "app", DIGEST, {"findings": [finding("DSA-1", "high", aliases=["CVE-2"])]})
    replace_findings(fresh, "other", DIGEST, {"findings": [finding("DSA-1", "high", aliases=["CVE-2"])]})
    replace_findings(fresh, "app", DIGEST, {"findings": [finding("CVE-9", "low")]})
    assert [(r["repo_name"], r["advisory_id"]) for r in rows(fresh)] == [("app", "CVE-9"), ("other", "DSA-1")]
    assert aliases(fresh) == {("CVE-2", "DSA-1")}
    replace_findings(fresh, "app", DIGEST, {"findings": []})
    assert [r["repo_name"] for r in rows(fresh)] == ["other"]


def test_rows_go_with_the_image(fresh: MetadataStore) -> None:
    replace_findings(fresh, "app", DIGEST, {"findings": [finding("CVE-1", "high")]})
    replace_findings(fresh, "keep", DIGEST, {"findings": [finding("CVE-1", "high")]})
    PipelineStore(fresh).forget_image("app", DIGEST)  # what manifest delete and GC call
    assert [r["repo_name"] for r in rows(fresh)] == ["keep"]


def test_fingerprint_sees_ratings_that_the_report_fingerprint_does_not(fresh: MetadataStore) -> None:
    before = {"findings": [finding("CVE-1", "high")]}
    replace_findings(fresh, "app", DIGEST, before)
    stored = stored_fingerprints(fresh, [("app", DIGEST), ("none", DIGEST)])
    from hallmark.pipeline.finding_rows import report_rows

    assert stored[("app", DIGEST)] == rows_fingerprint(report_rows("app", DIGEST, before))
    assert stored[("none", DIGEST)] == rows_fingerprint([])
    for changed in (
        finding("CVE-1", "high", kev=True),
        finding("CVE-1", "critical"),
        finding("CVE-1", "high", fixed=["9"]),
    ):
        assert rows_fingerprint(report_rows("app", DIGEST, {"findings": [changed]})) != stored[("app", DIGEST)]
    assert severity_of("Critical") == ("critical", 4) and severity_of("moderate") == ("unknown", 0)


def _image(meta: MetadataStore, repo: str, digest: str, summary: dict[str, Any] | None) -> None:
    with meta.transaction() as conn:
        conn.execute(
            images.insert().values(
                repo_name=repo,
                digest=digest,
                status="done",
                summary=orjson.dumps(summary).decode() if summary is not None else None,
                updated_at=utcnow(),
            )
        )


def test_backfill_writes_rows_for_reports_stored_before_them(fresh: MetadataStore) -> None:
    store = PipelineStore(fresh)
    docs: dict[tuple[str, str], dict[str, Any]] = {
        ("old", DIGEST): {"findings": [finding("CVE-1", "critical"), finding("CVE-2", "low", suppressed=True)]},
        ("clean", DIGEST): {"findings": []},
        ("done", DIGEST): {"findings": [finding("CVE-3", "high")]},
    }
    for (repo, digest), doc in docs.items():
        n = len(doc["findings"])
        _image(fresh, repo, digest, {"total": n, "suppressed": 0} if repo != "old" else {"total": 1, "suppressed": 1})
        store.put_report(repo, digest, "vulnerabilities", doc, None)
    replace_findings(fresh, "done", DIGEST, docs[("done", DIGEST)])
    assert missing_rows(fresh) == [("old", DIGEST)]  # "clean" has nothing to write, "done" has its rows
    calls: list[tuple[str, str]] = []

    def load(repo: str, digest: str) -> dict[str, Any] | None:
        calls.append((repo, digest))
        found = store.get_report(repo, digest, "vulnerabilities")
        return found["doc"] if found else None

    assert backfill(fresh, load) == {"images": 1, "rows": 2}
    assert calls == [("old", DIGEST)]
    assert sorted((r["repo_name"], r["advisory_id"]) for r in rows(fresh)) == [
        ("done", "CVE-3"),
        ("old", "CVE-1"),
        ("old", "CVE-2"),
    ]
    assert missing_rows(fresh) == [] and backfill(fresh, load) == {"images": 0, "rows": 0}


def test_backfill_is_a_periodic_job(fresh: MetadataStore) -> None:
    import types

    from hallmark.lifecycle import jobs  # noqa: F401  (registers the jobs)
    from hallmark.lifecycle.scheduler import JOBS, Scheduler

    store = PipelineStore(fresh)
    _image(fresh, "old", DIGEST, {"total": 1})
    store.put_report("old", DIGEST, "vulnerabilities", {"findings": [finding("CVE-1", "high")]}, None)
    job = JOBS["findings.backfill"]
    cfg = types.SimpleNamespace()
    assert job.interval(cfg) == 3600  # type: ignore[arg-type]
    ctx = types.SimpleNamespace(
        config=cfg, meta=fresh, blobs=None, registry=None, pipeline=types.SimpleNamespace(store=store)
    )
    results = Scheduler(fresh).run_due(ctx, force=True, only={"findings.backfill"})
    assert results[0]["status"] == "ok" and results[0]["detail"] == {"images": 1, "rows": 1}
    assert [r["advisory_id"] for r in rows(fresh)] == ["CVE-1"]


def test_provenance_goes_with_the_last_repository_holding_the_digest(fresh: MetadataStore) -> None:
    from hallmark.provenance.facts import CI, Source
    from hallmark.provenance.store import record
    from hallmark.provenance.tables import provenance

    with fresh.transaction() as conn:
        for repo in ("app", "copy"):
            conn.execute(images.insert().values(repo_name=repo, digest=DIGEST, status="done", updated_at=utcnow()))
    record(fresh, "app", [Source(DIGEST, CI, "ci:github", source_repo="https://git.example/app", revision="abc")])

    def kept() -> list[str]:
        with fresh.transaction() as conn:
            return [r.revision for r in conn.execute(select(provenance.c.revision))]

    PipelineStore(fresh).forget_image("app", DIGEST)
    assert kept() == ["abc"]  # the same content is still in "copy"
    PipelineStore(fresh).forget_image("copy", DIGEST)
    assert kept() == []
