"""Package rows and text documents: rewritten with the inventory, gone with the image (the FTS
index too), back-filled for images indexed before they existed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, select, text

from hallmark.discovery.packages import backfill, document_body, missing_documents, write_image
from hallmark.discovery.search import text_matches
from hallmark.discovery.tables import image_packages
from hallmark.index import IndexResult
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.pipeline.store import PipelineStore
from hallmark.pipeline.tables import images
from tests.discovery.conftest import deb, digest, pypi

D1, D2 = digest(1), digest(2)


def packages(meta: MetadataStore) -> list[tuple[str, str, str]]:
    q = select(image_packages.c.repo_name, image_packages.c.name, image_packages.c.version).order_by(
        image_packages.c.repo_name, image_packages.c.name
    )
    with meta.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(q)]


def hits(meta: MetadataStore, q: str) -> set[tuple[str, str]]:
    with meta.engine.connect() as conn:
        return text_matches(conn, q)


def test_rewrite_and_forget(fresh: MetadataStore) -> None:
    write_image(fresh, "a/app", D1, [deb("openssl", "3.0.2-1"), deb("openssl", "3.0.2-1"), pypi("flask", "3")], {})
    write_image(fresh, "b/app", D1, [deb("openssl", "3.0.2-1")], {"title": "Shop front"})
    write_image(fresh, "a/app", D1, [deb("zlib1g", "1.2.13")], {})  # re-indexed: the rows say the new inventory
    assert packages(fresh) == [("a/app", "zlib1g", "1.2.13"), ("b/app", "openssl", "3.0.2-1")]
    assert hits(fresh, "flask") == set() and hits(fresh, "zlib1g") == {("a/app", D1)}
    assert hits(fresh, "shop") == {("b/app", D1)}
    PipelineStore(fresh).forget_image("b/app", D1)  # what manifest delete and GC call
    assert packages(fresh) == [("a/app", "zlib1g", "1.2.13")]
    assert hits(fresh, "shop") == set() and hits(fresh, "openssl") == set()
    with fresh.engine.connect() as conn:  # the FTS index holds only the remaining document
        assert conn.execute(text("SELECT count(*) FROM search_fts WHERE search_fts MATCH 'app'")).scalar() == 1


def test_document_body_words() -> None:
    body = document_body("acme/web-shop", {"maintainer": "Team Blue " + "x" * 500}, [pypi("Django", "4")])
    assert body.split()[:4] == ["acme/web-shop", "acme", "web", "shop"]
    assert "Django" in body and "Blue" in body and "x" * 201 not in body


def test_backfill_writes_rows_for_images_indexed_before(fresh: MetadataStore) -> None:
    with fresh.transaction() as conn:
        for repo, d, count in (("a/old", D1, 2), ("a/none", D2, 1), ("a/queued", D2, None)):
            conn.execute(
                images.insert().values(
                    repo_name=repo, digest=d, status="done", package_count=count, updated_at=utcnow()
                )
            )
    inv = IndexResult("done", packages=[deb("openssl", "3.0.2-1"), pypi("flask", "3")])

    def inventory(d: str) -> Any:
        return inv if d == D1 else None  # D2's inventory is gone from the cache

    pipeline = SimpleNamespace(meta=fresh, inventory=inventory, blobs=None)
    assert missing_documents(fresh) == [("a/none", D2), ("a/old", D1)]
    assert backfill(pipeline) == {"images": 1, "rows": 2}
    assert missing_documents(fresh) == [("a/none", D2)]
    assert backfill(pipeline) == {"images": 0, "rows": 0}
    with fresh.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(image_packages)).scalar() == 2
