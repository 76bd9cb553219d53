"""Package rows and the text document of each image, written when the image is indexed.

Inventories are cached JSON documents, fine for one image but not for "which of 10,000 images
hold openssl < 3.0.7": these rows let the catalog search use indexes. They are rewritten when
the image is indexed (:func:`write_image`, called by the pipeline's index stage), removed with
the image (:func:`forget_image`, from ``PipelineStore.forget_image``) and back-filled for
images indexed before the rows existed (:func:`backfill`, the ``packages.backfill`` job).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, exists, select
from sqlalchemy.engine import Connection

from hallmark.discovery.tables import image_chains, image_packages, search_documents
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.model import Package
from hallmark.pipeline.tables import images

log = logging.getLogger(__name__)

_CHUNK = 1000
MAX_LABEL_CHARS = 200  # per label value in the text document; labels can hold whole files
_WORD = re.compile(r"[^\s]+")


def purl_name(purl: str | None) -> str | None:
    """``pkg:pypi/Django@4.2?x=y#sub`` -> ``pkg:pypi/django``: what a ``purl=`` filter compares.

    Type and namespace are case-insensitive in the purl spec; the name is lower-cased too since
    the ecosystems where case matters (npm, Maven) do not ship two packages differing only by case.
    """
    if not purl:
        return None
    base = purl.split("#", 1)[0].split("?", 1)[0].rstrip("/").replace("%40", "@")
    head, sep, last = base.rpartition("/")
    if "@" in last[1:]:  # the version separator (a leading @ belongs to an unencoded npm scope)
        last = last[: last.rindex("@")]
    base = head + sep + last
    return base.lower()[:512] if base.startswith("pkg:") else None


def package_rows(repo: str, digest: str, packages: Iterable[Package]) -> list[dict[str, Any]]:
    """One row per distinct (name, version, purl) of the inventory."""
    seen: set[tuple[str, str, str | None]] = set()
    out = []
    for p in packages:
        key = (p.name, p.version, p.purl)
        if key in seen or not p.name:
            continue
        seen.add(key)
        out.append(
            {
                "repo_name": repo,
                "digest": digest,
                "name": p.name[:255],
                "version": (p.version or "")[:255],
                "ecosystem": (p.ecosystem or None) and p.ecosystem[:64],
                "purl": p.purl or None,
                "purl_name": purl_name(p.purl),
            }
        )
    return out


def document_body(repo: str, labels: Mapping[str, Any], packages: Iterable[Package]) -> str:
    """The words full text search matches: repository name (and its path parts), label keys and
    values (each value cut to ``MAX_LABEL_CHARS``), distinct package names."""
    words: dict[str, None] = {repo: None}
    for part in re.split(r"[/._-]+", repo):
        words.setdefault(part, None)
    for k, v in labels.items():
        words.setdefault(str(k), None)
        for w in _WORD.findall(str(v)[:MAX_LABEL_CHARS]):
            words.setdefault(w, None)
    for p in packages:
        if p.name:
            words.setdefault(p.name, None)
    return " ".join(w for w in words if w)


def _drop_document(conn: Connection, repo: str, digest: str) -> None:
    row = conn.execute(
        select(search_documents.c.id, search_documents.c.body).where(
            search_documents.c.digest == digest, search_documents.c.repo_name == repo
        )
    ).first()
    if row is None:
        return
    if conn.dialect.name == "sqlite":  # contentless FTS5: a delete names the indexed text again
        conn.exec_driver_sql("INSERT INTO search_fts(search_fts, rowid, body) VALUES('delete', ?, ?)", (row[0], row[1]))
    conn.execute(delete(search_documents).where(search_documents.c.id == row[0]))


def chain_key(layers: Sequence[str]) -> str:
    """What identifies a layer list (and so, with a prefix of it, a base image)."""
    return hashlib.sha256(",".join(layers).encode()).hexdigest()


def write_rows(
    conn: Connection,
    repo: str,
    digest: str,
    packages: Sequence[Package],
    labels: Mapping[str, Any],
    layers: Sequence[str] = (),
) -> int:
    """Inside the caller's transaction: replace the image's package rows, text document and
    layer chain."""
    forget_image(conn, repo, digest)
    if layers:
        conn.execute(
            image_chains.insert().values(repo_name=repo, digest=digest, chain=chain_key(layers), layers=len(layers))
        )
    rows = package_rows(repo, digest, packages)
    for i in range(0, len(rows), _CHUNK):
        conn.execute(image_packages.insert(), rows[i : i + _CHUNK])
    body = document_body(repo, labels, packages)
    new_id = conn.execute(
        search_documents.insert().values(repo_name=repo, digest=digest, body=body, updated_at=utcnow())
    ).inserted_primary_key
    if conn.dialect.name == "sqlite" and new_id:
        conn.exec_driver_sql("INSERT INTO search_fts(rowid, body) VALUES (?, ?)", (new_id[0], body))
    return len(rows)


def write_image(
    meta: MetadataStore,
    repo: str,
    digest: str,
    packages: Sequence[Package],
    labels: Mapping[str, Any],
    layers: Sequence[str] = (),
) -> int:
    """Make the rows say what this inventory says, in one transaction; returns the row count."""
    with meta.transaction() as conn:
        return write_rows(conn, repo, digest, packages, labels, layers)


def forget_image(conn: Connection, repo: str, digest: str) -> None:
    """Inside the caller's transaction: the image's package rows and text document go."""
    conn.execute(delete(image_packages).where(image_packages.c.digest == digest, image_packages.c.repo_name == repo))
    conn.execute(delete(image_chains).where(image_chains.c.digest == digest, image_chains.c.repo_name == repo))
    _drop_document(conn, repo, digest)


def labels_from_config(config: bytes) -> dict[str, Any]:
    """The config's labels; {} for a config that is not JSON (never fails the index)."""
    from hallmark.provenance.facts import labels_of

    try:
        return labels_of(orjson.loads(config))
    except orjson.JSONDecodeError:
        return {}


def missing_documents(meta: MetadataStore, limit: int = 500) -> list[tuple[str, str]]:
    """Indexed images without a text document (indexed before the rows existed)."""
    has_doc = exists().where(
        search_documents.c.digest == images.c.digest, search_documents.c.repo_name == images.c.repo_name
    )
    q = (
        select(images.c.repo_name, images.c.digest)
        .where(images.c.package_count.is_not(None), ~has_doc)
        .order_by(images.c.repo_name, images.c.digest)
        .limit(limit)
    )
    with meta.engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(q)]


def backfill(pipeline: Any, batch: int = 500) -> dict[str, int]:
    """Rows for every image :func:`missing_documents` names, from its cached inventory and config.

    An image whose inventory is no longer cached is remembered for this run so the loop ends
    (the next index writes its rows).
    """
    stats = {"images": 0, "rows": 0}
    seen: set[tuple[str, str]] = set()
    while True:
        todo = [k for k in missing_documents(pipeline.meta, batch + len(seen)) if k not in seen]
        if not todo:
            return stats
        for repo, digest in todo:
            seen.add((repo, digest))
            inv = pipeline.inventory(digest)
            if inv is None:
                continue
            labels = _stored_labels(pipeline, digest)
            stats["rows"] += write_image(pipeline.meta, repo, digest, inv.packages, labels, inv.layers)
            stats["images"] += 1


def _stored_labels(pipeline: Any, digest: str) -> dict[str, Any]:
    """Labels of a stored image's config (any repository holding the digest); {} when unreadable."""
    from hallmark.metadata.tables import manifests

    with pipeline.meta.engine.connect() as conn:
        content = conn.execute(select(manifests.c.content).where(manifests.c.digest == digest).limit(1)).scalar()
    try:
        config = (orjson.loads(content).get("config") or {}).get("digest") if content else None
        if not isinstance(config, str) or (pipeline.blobs.stat(config) or 0) > 8 << 20:
            return {}
        with pipeline.blobs.open(config) as f:
            return labels_from_config(f.read(8 << 20))
    except (OSError, KeyError, AttributeError, orjson.JSONDecodeError):
        log.info("labels of %s not read for the search document", digest)
        return {}


def backfill_job(ctx: Any) -> dict[str, int]:
    """Periodic job ``packages.backfill``: rows for images indexed before they existed."""
    if ctx.pipeline is None:
        return {"images": 0, "rows": 0}
    return backfill(ctx.pipeline)
