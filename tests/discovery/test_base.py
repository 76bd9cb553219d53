"""Base image (declared by annotation, else the longest layer-list prefix among cataloged images)
and upgrade advice (approved replacements of the same OS family, critical/high removed and added)."""

from __future__ import annotations

from typing import Any

import orjson

from hallmark.catalog.tables import catalog_entries
from hallmark.discovery.base import base_and_advice
from hallmark.discovery.packages import write_image
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import manifests, repositories, tags
from hallmark.pipeline.finding_rows import replace_findings
from hallmark.pipeline.tables import images
from tests.discovery.conftest import ALP, DEB12, digest
from tests.explore.graph import finding

L = ["sha256:" + c * 64 for c in "abcdef"]


def add(
    meta: MetadataStore,
    repo: str,
    n: int,
    layers: list[str],
    stage: str | None = None,
    distro: dict[str, Any] | None = None,
    findings: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    replacement: str | None = None,
) -> str:
    d = digest(n)
    now = utcnow()
    doc: dict[str, Any] = {"schemaVersion": 2, "layers": [{"digest": x, "size": 1} for x in layers]}
    if annotations:
        doc["annotations"] = annotations
    with meta.transaction() as conn:
        rid = conn.execute(repositories.select().where(repositories.c.name == repo)).first()
        if rid is None:
            rid = conn.execute(
                repositories.insert().values(name=repo, immutable_tags=False, created_at=now)
            ).inserted_primary_key
            assert rid is not None
        conn.execute(
            manifests.insert().values(
                repo_id=rid[0],
                digest=d,
                media_type="application/vnd.oci.image.manifest.v1+json",
                size=1,
                content=orjson.dumps(doc),
                created_at=now,
            )
        )
        conn.execute(tags.insert().values(repo_id=rid[0], name=f"v{n}", digest=d, updated_at=now))
        conn.execute(
            images.insert().values(
                repo_name=repo,
                digest=d,
                status="done",
                grade="B",
                distro=orjson.dumps(distro or DEB12).decode(),
                updated_at=now,
            )
        )
        if stage:
            conn.execute(
                catalog_entries.insert().values(
                    repo_name=repo, digest=d, stage=stage, replacement=replacement, updated_at=now
                )
            )
    write_image(meta, repo, d, [], {}, layers)
    replace_findings(meta, repo, d, {"findings": findings or []})
    return d


def test_longest_layer_prefix_is_the_base_and_advice_when_it_is_deprecated(fresh: MetadataStore) -> None:
    add(fresh, "base/debian", 1, L[:1], "approved")
    old = add(
        fresh,
        "base/debian",
        2,
        L[:2],
        "deprecated",
        findings=[finding("CVE-1", "critical", fixed=["2"]), finding("CVE-2", "high"), finding("CVE-3", "low")],
    )
    new = add(fresh, "base/debian", 3, ["sha256:" + "9" * 64], "approved", findings=[finding("CVE-2", "high")])
    add(fresh, "base/debian", 4, ["sha256:" + "8" * 64], "approved", distro=ALP)  # other OS family: not advised
    add(fresh, "base/debian", 5, ["sha256:" + "7" * 64], "staging")  # not approved: not advised
    app = add(fresh, "team/app", 6, L[:4])
    doc = base_and_advice(fresh, "team/app", app)
    assert doc["base"] == {
        "repository": "base/debian",
        "digest": old,
        "name": None,
        "source": "layers",
        "cataloged": True,
        "stage": "deprecated",
        "grade": "B",
    }
    advice = doc["advice"]
    assert advice["reasons"] == ["the base image is deprecated", "the base image has 1 fixable finding(s)"]
    # most critical/high removed first: the clean image removes CVE-1 and CVE-2, the other CVE-1 only
    assert [o["digest"] for o in advice["replacements"]] == [digest(1), new]
    first, second = advice["replacements"]
    assert first["removes"] == {"critical_high": 2} and first["adds"] == {"critical_high": 0}
    assert second["removes"] == {"critical_high": 1} and second["adds"] == {"critical_high": 0}
    assert first["grade"] == "B" and not first["declared_replacement"]


def test_annotation_wins_and_no_advice_for_a_sound_base(fresh: MetadataStore) -> None:
    base = add(fresh, "base/alpine", 1, L[:1], "approved", distro=ALP)
    add(fresh, "base/other", 2, L[:2], "deprecated")
    app = add(
        fresh,
        "team/app",
        3,
        L[:3],
        annotations={
            "org.opencontainers.image.base.digest": base,
            "org.opencontainers.image.base.name": "base/alpine:3.19",
        },
    )
    doc = base_and_advice(fresh, "team/app", app)
    assert doc["base"]["source"] == "annotation" and doc["base"]["digest"] == base
    assert doc["base"]["name"] == "base/alpine:3.19" and doc["base"]["stage"] == "approved"
    assert doc["advice"] is None
    alone = add(fresh, "team/solo", 4, ["sha256:" + "5" * 64, "sha256:" + "6" * 64])
    assert base_and_advice(fresh, "team/solo", alone) == {"base": None, "advice": None}


def test_declared_replacement_comes_first(fresh: MetadataStore) -> None:
    add(fresh, "base/old", 1, L[:1], "approved")  # same repository, removes nothing
    pinned = add(fresh, "base/new", 7, ["sha256:" + "4" * 64], "approved")
    add(fresh, "base/old", 2, L[:2], "retired", replacement="base/new:v7", findings=[finding("CVE-1", "high")])
    app = add(fresh, "team/app", 3, L[:3])
    advice = base_and_advice(fresh, "team/app", app)["advice"]
    assert advice["reasons"] == ["the base image is retired"]
    assert [(o["digest"], o["declared_replacement"]) for o in advice["replacements"]] == [
        (pinned, True),
        (digest(1), False),
    ]
