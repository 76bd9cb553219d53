"""A small catalog written straight into the tables, per backend (SQLite and a real PostgreSQL):
package rows and text documents through hallmark.discovery.packages, findings through
hallmark.pipeline.finding_rows, catalog stages, grades, OS releases and end-of-life documents."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hallmark.catalog.tables import catalog_entries
from hallmark.discovery.packages import write_image
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import manifests, repositories
from hallmark.model import Package
from hallmark.pipeline.finding_rows import replace_findings
from hallmark.pipeline.tables import images
from tests.explore.conftest import open_meta
from tests.explore.graph import finding

DEB12 = {"id": "debian", "version_id": "12", "codename": "bookworm", "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
ALP = {"id": "alpine", "version_id": "3.19.1", "pretty_name": "Alpine Linux v3.19"}


def digest(n: int) -> str:
    return "sha256:" + f"{n:x}" * 64


def deb(name: str, version: str) -> Package:
    return Package(name, version, "Debian:12", purl=f"pkg:deb/debian/{name}@{version}?distro=debian-12")


def pypi(name: str, version: str) -> Package:
    return Package(name, version, "PyPI", purl=f"pkg:pypi/{name}@{version}")


def eol_doc(eol: str) -> dict[str, Any]:
    return {"entries": [{"product": "debian", "cycle": "12", "kind": "os", "eol": eol, "versions": ["12"]}]}


# repo, n, stage, grade, distro, packages, findings, labels, eol date, pushed days ago
IMAGES: list[
    tuple[
        str,
        int,
        str | None,
        str | None,
        dict[str, Any] | None,
        list[Package],
        list[Any],
        dict[str, str],
        str | None,
        int,
    ]
] = [
    (
        "team/web",
        1,
        "approved",
        "B",
        DEB12,
        [deb("openssl", "3.0.2-1"), deb("libc6", "2.36-9"), pypi("Django", "4.2.1")],
        [finding("CVE-2024-0001", "critical", version="3.0.2-1", fixed=["3.0.7-1"], kev=True)],
        {"org.opencontainers.image.title": "storefront"},
        "2099-01-01",
        3,
    ),
    (
        "team/api",
        2,
        None,
        "A",
        DEB12,
        [deb("openssl", "3.0.11-1"), pypi("flask", "3.0.0")],
        [
            finding("DSA-5555-1", "high", package="openssl", version="3.0.11-1", aliases=["CVE-2024-0002"]),
            finding("CVE-2024-0001", "critical", version="3.0.11-1", suppressed=True),
        ],
        {},
        "2000-01-01",
        2,
    ),
    (
        "team/batch",
        3,
        "approved",
        "A",
        ALP,
        [Package("openssl", "3.1.4-r5", "Alpine:v3.19", purl="pkg:apk/alpine/openssl@3.1.4-r5")],
        [],
        {"description": "nightly batch jobs"},
        None,
        1,
    ),
    (
        "old/legacy",
        4,
        "retired",
        "F",
        DEB12,
        [deb("openssl", "1.1.1n-0+deb11u3"), pypi("django", "2.2")],
        [finding("CVE-2024-0001", "critical", version="1.1.1n-0+deb11u3", fixed=["1.1.1n-0+deb11u4"])],
        {},
        None,
        9,
    ),
]


def build(meta: MetadataStore) -> None:
    now = utcnow()
    with meta.transaction() as conn:
        for repo in sorted({i[0] for i in IMAGES}):
            conn.execute(repositories.insert().values(name=repo, immutable_tags=False, created_at=now))
        ids = {
            r[1]: r[0]
            for r in conn.execute(repositories.select().with_only_columns(repositories.c.id, repositories.c.name))
        }
        for repo, n, stage, grade, distro, _, _, _, eol, ago in IMAGES:
            conn.execute(
                manifests.insert().values(
                    repo_id=ids[repo],
                    digest=digest(n),
                    media_type="application/vnd.oci.image.manifest.v1+json",
                    size=2,
                    content=b"{}",
                    created_at=now - dt.timedelta(days=ago),
                )
            )
            conn.execute(
                images.insert().values(
                    repo_name=repo,
                    digest=digest(n),
                    status="done",
                    grade=grade,
                    distro=orjson.dumps(distro).decode() if distro else None,
                    lifecycle=orjson.dumps(eol_doc(eol)).decode() if eol else None,
                    package_count=1,
                    updated_at=now,
                )
            )
            if stage:
                conn.execute(
                    catalog_entries.insert().values(
                        repo_name=repo,
                        digest=digest(n),
                        stage=stage,
                        owner="payments" if n == 1 else None,
                        updated_at=now,
                    )
                )
    for repo, n, _, _, _, packages, findings, labels, _, _ in IMAGES:
        write_image(meta, repo, digest(n), packages, labels)
        replace_findings(meta, repo, digest(n), {"findings": findings})


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetadataStore]:
    meta = open_meta(request, str(request.param), tmp_path_factory.mktemp("discovery"))
    build(meta)
    yield meta
    meta.engine.dispose()


@pytest.fixture
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    meta = open_meta(request, "sqlite", tmp_path)
    yield meta
    meta.engine.dispose()
