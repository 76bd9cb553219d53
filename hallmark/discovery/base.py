"""Each image's base image and upgrade advice (the image document's ``base`` and ``advice``).

The base is what the manifest declares (``org.opencontainers.image.base.digest`` / ``.base.name``
annotations) when present, else the cataloged image whose layer list is the longest proper
prefix of this image's layers (``image_chains``: one hash per image, looked up for every prefix).
Advice is given when the base is deprecated, retired, past end of life or has fixable findings:
the approved images that could replace it (same repository as the base, or its declared
replacement), of the same OS family, each with how many critical/high findings moving to it
removes and adds, and its grade; best first.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, false, select, true
from sqlalchemy.engine import Connection

from hallmark.catalog.store import DEFAULT_STAGE
from hallmark.catalog.tables import catalog_entries
from hallmark.discovery.packages import chain_key
from hallmark.discovery.search import GRADE_ORDER, eol_status
from hallmark.discovery.tables import image_chains
from hallmark.metadata.store import MetadataStore
from hallmark.metadata.tables import manifests, repositories, tags
from hallmark.pipeline.tables import image_findings, images

BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"
MAX_ADVICE = 5


def _manifest(conn: Connection, repo: str, digest: str) -> tuple[list[str], dict[str, Any]]:
    """(layer digests, annotations) of a stored manifest; empty when unknown or unreadable."""
    row = conn.execute(
        select(manifests.c.content, manifests.c.annotations)
        .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repo_id))
        .where(repositories.c.name == repo, manifests.c.digest == digest)
    ).first()
    if row is None:
        return [], {}
    try:
        doc = orjson.loads(row[0])
    except orjson.JSONDecodeError:
        return [], {}
    layers = doc.get("layers") if isinstance(doc, dict) else None
    digests = [d["digest"] for d in layers or [] if isinstance(d, dict) and isinstance(d.get("digest"), str)]
    ann = doc.get("annotations") if isinstance(doc, dict) else None
    return digests, ann if isinstance(ann, dict) else {}


def _image_row(conn: Connection, repo: str, digest: str) -> dict[str, Any] | None:
    q = (
        select(
            images.c.repo_name,
            images.c.digest,
            images.c.grade,
            images.c.distro,
            images.c.lifecycle,
            catalog_entries.c.stage,
            catalog_entries.c.replacement,
        )
        .select_from(
            images.outerjoin(
                catalog_entries,
                and_(catalog_entries.c.repo_name == images.c.repo_name, catalog_entries.c.digest == images.c.digest),
            )
        )
        .where(images.c.repo_name == repo, images.c.digest == digest)
    )
    r = conn.execute(q).mappings().first()
    if r is None:
        return None
    return {str(k): v for k, v in r.items()}


def find_base(conn: Connection, repo: str, digest: str) -> dict[str, Any] | None:
    """``{repository, digest, name, source}`` of the base (``source`` says how it was found), or None."""
    layers, ann = _manifest(conn, repo, digest)
    return base_of(conn, layers, ann)


def base_of(conn: Connection, layers: list[str], ann: dict[str, Any]) -> dict[str, Any] | None:
    """The base of an image given its layer digests and manifest annotations (stored or not:
    ``hallmark scan`` of a local image asks the local catalog with this)."""
    declared = ann.get(BASE_DIGEST)
    if isinstance(declared, str) and declared:
        name = ann.get(BASE_NAME) if isinstance(ann.get(BASE_NAME), str) else None
        hit = conn.execute(
            select(images.c.repo_name).where(images.c.digest == declared).order_by(images.c.repo_name).limit(1)
        ).scalar()
        return {"repository": hit, "digest": declared, "name": name, "source": "annotation", "cataloged": bool(hit)}
    if len(layers) < 2:
        return None
    prefixes = {chain_key(layers[:k]): k for k in range(1, len(layers))}
    q = (
        select(image_chains.c.repo_name, image_chains.c.digest, image_chains.c.layers)
        .where(image_chains.c.chain.in_(sorted(prefixes)))
        .order_by(image_chains.c.layers.desc(), image_chains.c.repo_name, image_chains.c.digest)
        .limit(1)
    )
    row = conn.execute(q).first()
    if row is None:
        return None
    return {"repository": row[0], "digest": row[1], "name": None, "source": "layers", "cataloged": True}


def _serious(conn: Connection, repo: str, digest: str) -> set[str]:
    """Advisory ids of unsuppressed critical/high findings of an image."""
    f = image_findings.c
    q = select(f.advisory_id, f.package).where(
        f.repo_name == repo, f.digest == digest, f.severity_rank >= 3, f.suppressed == false()
    )
    return {f"{r[0]}|{r[1]}" for r in conn.execute(q)}


def _fixable(conn: Connection, repo: str, digest: str) -> int:
    f = image_findings.c
    q = select(f.id).where(f.repo_name == repo, f.digest == digest, f.fix_available == true(), f.suppressed == false())
    return len(conn.execute(q.limit(10_000)).all())


def _family(distro: str | None) -> str | None:
    try:
        d = orjson.loads(distro) if distro else None
    except orjson.JSONDecodeError:
        return None
    return str(d.get("id")) if isinstance(d, dict) and d.get("id") else None


def _replacement_repo(conn: Connection, ref: str | None) -> tuple[str, str | None] | None:
    """(repository, digest or None) of a declared replacement ``repo@digest`` / ``repo:tag``."""
    if not ref:
        return None
    if "@" in ref:
        r, _, pinned = ref.rpartition("@")
        return r, pinned
    r, _, t = ref.rpartition(":")
    d: str | None = conn.execute(
        select(tags.c.digest)
        .select_from(tags.join(repositories, repositories.c.id == tags.c.repo_id))
        .where(repositories.c.name == r, tags.c.name == t)
    ).scalar()
    return r, d


def advice_for(conn: Connection, base: dict[str, Any], eol_soon_days: int) -> dict[str, Any] | None:
    """Why the base should be replaced and by what, or None when it need not be."""
    row = _image_row(conn, base["repository"], base["digest"]) if base.get("repository") else None
    if row is None:
        return None
    stage = row["stage"] or DEFAULT_STAGE
    reasons = []
    if stage in ("deprecated", "retired"):
        reasons.append(f"the base image is {stage}")
    if eol_status(row["lifecycle"], eol_soon_days) == "eol":
        reasons.append("the base image is past end of life")
    fixable = _fixable(conn, row["repo_name"], row["digest"])
    if fixable:
        reasons.append(f"the base image has {fixable} fixable finding(s)")
    if not reasons:
        return None
    family = _family(row["distro"])
    repos = {row["repo_name"]}
    pinned = _replacement_repo(conn, row["replacement"])
    if pinned:
        repos.add(pinned[0])
    q = (
        select(images.c.repo_name, images.c.digest, images.c.grade, images.c.distro)
        .select_from(
            images.join(
                catalog_entries,
                and_(catalog_entries.c.repo_name == images.c.repo_name, catalog_entries.c.digest == images.c.digest),
            )
        )
        .where(catalog_entries.c.stage == "approved", images.c.repo_name.in_(sorted(repos)))
    )
    mine = _serious(conn, row["repo_name"], row["digest"])
    options = []
    for r in conn.execute(q):
        if (r[0], r[1]) == (row["repo_name"], row["digest"]) or (family and _family(r[3]) != family):
            continue
        theirs = _serious(conn, r[0], r[1])
        options.append(
            {
                "repository": r[0],
                "digest": r[1],
                "grade": r[2] or "unknown",
                "declared_replacement": bool(pinned and pinned[0] == r[0] and pinned[1] in (None, r[1])),
                "removes": {"critical_high": len(mine - theirs)},
                "adds": {"critical_high": len(theirs - mine)},
            }
        )

    def rank(o: dict[str, Any]) -> tuple[Any, ...]:
        grade = GRADE_ORDER.index(o["grade"]) if o["grade"] in GRADE_ORDER else len(GRADE_ORDER)
        gain = o["removes"]["critical_high"] - o["adds"]["critical_high"]
        return (not o["declared_replacement"], -gain, grade, o["repository"], o["digest"])

    options.sort(key=rank)
    return {"reasons": reasons, "replacements": options[:MAX_ADVICE]}


def base_and_advice(meta: MetadataStore, repo: str, digest: str, eol_soon_days: int = 90) -> dict[str, Any]:
    """``{"base": ..., "advice": ...}`` for the image document (each None when there is none)."""
    with meta.engine.connect() as conn:
        base = find_base(conn, repo, digest)
        advice = advice_for(conn, base, eol_soon_days) if base else None
    if base is not None and base.get("repository"):
        with meta.engine.connect() as conn:
            row = _image_row(conn, base["repository"], base["digest"])
        if row is not None:
            base["stage"] = row["stage"] or DEFAULT_STAGE
            base["grade"] = row["grade"] or "unknown"
    return {"base": base, "advice": advice}


def advice_for_layers(
    meta: MetadataStore, layers: list[str], annotations: dict[str, Any], eol_soon_days: int = 90
) -> dict[str, Any]:
    """``{"base": ..., "advice": ...}`` for an image that need not be in the catalog (its layers and
    annotations given), judged against this catalog."""
    with meta.engine.connect() as conn:
        base = base_of(conn, layers, annotations)
        advice = advice_for(conn, base, eol_soon_days) if base else None
        row = _image_row(conn, base["repository"], base["digest"]) if base and base.get("repository") else None
    if base is not None and row is not None:
        base["stage"] = row["stage"] or DEFAULT_STAGE
        base["grade"] = row["grade"] or "unknown"
    return {"base": base, "advice": advice}
