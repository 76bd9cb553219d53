"""Explore: source repository -> commit -> pipeline run -> image digest -> workload -> exposure,
joined with findings, grade, lifecycle and catalog owner.

Two views over the same graph:

* ``workloads`` (default): one row per (workload, image it runs): who runs what, exposed how,
  with which findings, built from which commit by which run, owned by whom;
* ``images``: one row per image, with the workloads that run it (``running=false``: images
  no inventoried workload runs).

A page query selects only keys, with every filter in SQL (findings through the indexed
``image_findings`` rows, never the report documents), ordered and cut with a keyset cursor;
the details of the page's rows are then read with one query per table. A container is joined
to a Hallmark image by digest (and by repository when the inventory resolved one), or to the
platform images of the image index it runs; a container running a digest Hallmark does not
hold has no image, findings or owner here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import and_, false, func, literal, or_, select, true, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from hallmark.advisories.versions import UnparseableVersion, cmp, scheme_for_ecosystem
from hallmark.catalog.tables import catalog_entries as C
from hallmark.explore.filters import Filters, PackageSpec, encode_cursor
from hallmark.inventory.tables import workload_images as WI
from hallmark.inventory.tables import workloads as W
from hallmark.lifecycle.eol import view as eol_view
from hallmark.metadata.store import MetadataStore
from hallmark.metadata.tables import manifest_refs as MR
from hallmark.metadata.tables import repositories as R
from hallmark.pipeline.tables import advisory_aliases as A
from hallmark.pipeline.tables import image_findings as F
from hallmark.pipeline.tables import images as I
from hallmark.provenance.store import rank
from hallmark.provenance.tables import provenance as P

MAX_FINDINGS = 50  # per row; ``finding_count`` says how many matched
MAX_WORKLOADS = 50  # per image row of the images view
_OPS = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
    "==": lambda c: c == 0,
    "!=": lambda c: c != 0,
}


# -- predicates -------------------------------------------------------------------------------------


def version_matches(spec: PackageSpec, ecosystem: str | None, version: str) -> bool:
    """Whether ``version`` satisfies every constraint, compared by the ecosystem's own scheme
    (dpkg for Debian, apk for Alpine, PEP 440 for PyPI, ...). An ecosystem without a scheme, or a
    version the scheme cannot order, never matches a range: unknown is not "in range"."""
    scheme = scheme_for_ecosystem(ecosystem) if ecosystem else None
    if scheme is None:
        return all(op == "==" and v == version for op, v in spec.constraints)
    try:
        key = scheme.key(version)
        return all(_OPS[op](cmp(key, scheme.key(_padded(scheme.name, v)))) for op, v in spec.constraints)
    except UnparseableVersion:
        return False


def _padded(scheme: str, bound: str) -> str:
    """SemVer needs three numbers; a bound written ``<2`` or ``>=1.2`` means ``2.0.0`` / ``1.2.0``."""
    if scheme == "semver" and re.fullmatch(r"\d+(\.\d+)?", bound):
        return bound + ".0" * (2 - bound.count("."))
    return bound


def _package_predicate(conn: Connection, spec: PackageSpec) -> ColumnElement[bool] | None:
    """Name match (as listed, or lower case); a range is resolved over the few distinct
    (ecosystem, version) pairs of that package, so the filter stays one indexed SQL predicate."""
    by_name = F.c.package.in_(sorted({spec.name, spec.name.lower()}))
    if not spec.constraints:
        return by_name
    pairs = conn.execute(select(F.c.ecosystem, F.c.version).where(by_name).distinct()).all()
    keep: dict[str | None, list[str]] = defaultdict(list)
    for eco, ver in pairs:
        if version_matches(spec, eco, ver):
            keep[eco].append(ver)
    if not keep:
        return None
    return and_(
        by_name,
        or_(
            *(
                and_(F.c.ecosystem.is_(None) if eco is None else F.c.ecosystem == eco, F.c.version.in_(vs))
                for eco, vs in keep.items()
            )
        ),
    )


def finding_predicates(conn: Connection, f: Filters) -> list[ColumnElement[bool]] | None:
    """Conditions on one ``image_findings`` row; None when no finding can match."""
    preds: list[ColumnElement[bool]] = []
    if not f.include_suppressed:
        preds.append(F.c.suppressed == false())
    if f.min_rank is not None:
        preds.append(F.c.severity_rank >= f.min_rank)
    if f.kev is not None:
        preds.append(F.c.kev == (true() if f.kev else false()))
    if f.fix_available is not None:
        preds.append(F.c.fix_available == (true() if f.fix_available else false()))
    if f.cve is not None:
        preds.append(
            or_(F.c.advisory_id == f.cve, F.c.advisory_id.in_(select(A.c.advisory_id).where(A.c.alias == f.cve)))
        )
    if f.package is not None:
        pkg = _package_predicate(conn, f.package)
        if pkg is None:
            return None
        preds.append(pkg)
    return preds


def source_predicate(value: str) -> ColumnElement[bool]:
    """A source repository as people write it: a URL (``https://github.com/acme/shop.git``,
    ``git@github.com:acme/shop``) or host and path match the normalised URL exactly (any case);
    ``acme/shop`` without a host matches any host."""
    text = value.strip().rstrip("/")
    if text.endswith(".git"):
        text = text[:-4]
    if text.startswith("git@") and ":" in text:
        text = "https://" + text[4:].replace(":", "/", 1)
    if "://" in text:
        text = "https://" + text.split("://", 1)[1].split("@")[-1]
    first = text.split("/", 1)[0]
    col = func.lower(P.c.source_repo)
    if "://" in text or "." in first or ":" in first:
        url = text if "://" in text else "https://" + text
        return col == url.lower()
    return col.like("%/" + text.lower().replace("%", r"\%").replace("_", r"\_"), escape="\\")


def _image_predicates(conn: Connection, f: Filters) -> list[ColumnElement[bool]] | None:
    preds: list[ColumnElement[bool]] = []
    fp = finding_predicates(conn, f)
    if fp is None:
        return None
    if f.on_findings:
        preds.append(tuple_(I.c.repo_name, I.c.digest).in_(select(F.c.repo_name, F.c.digest).where(*fp)))
    if f.grades:
        by_grade = I.c.grade.in_(f.grades)
        preds.append(or_(by_grade, I.c.grade.is_(None)) if "unknown" in f.grades else by_grade)
    if f.owner is not None:
        preds.append(C.c.owner == f.owner)
    if f.source_repo is not None:
        built = select(P.c.digest).where(source_predicate(f.source_repo))
        listed = select(MR.c.ref_digest).where(MR.c.kind == "manifest", MR.c.digest.in_(built))  # by its index
        preds.append(or_(I.c.digest.in_(built), I.c.digest.in_(listed)))
    return preds


def _workload_predicates(f: Filters) -> list[ColumnElement[bool]]:
    preds: list[ColumnElement[bool]] = []
    if f.exposed is not None:
        preds.append(W.c.exposed == (true() if f.exposed else false()))
    if f.cluster is not None:
        preds.append(W.c.cluster == f.cluster)
    if f.namespace is not None:
        preds.append(W.c.namespace == f.namespace)
    return preds


def _runs(wi_repo: Any, image_repo: Any) -> ColumnElement[bool]:
    """A container runs the image with its digest: in the repository the inventory resolved, or
    (the digest alone) when it resolved none."""
    return or_(wi_repo.is_(None), wi_repo == image_repo)


# -- the query --------------------------------------------------------------------------------------


def explore(meta: MetadataStore, f: Filters) -> dict[str, Any]:
    """One page: ``{"view", "rows", "next_cursor", "filters"}``."""
    with meta.engine.connect() as conn:
        if f.view == "images":
            rows, more = _images_page(conn, f)
        else:
            rows, more = _workloads_page(conn, f)
    next_cursor = encode_cursor(more) if more else None
    return {"view": f.view, "filters": f.echo(), "rows": rows, "next_cursor": next_cursor}


def _ordered(conn: Connection, cols: list[Any]) -> list[Any]:
    """Key columns in code-point order on both databases (PostgreSQL's default collation is the
    locale's), so the two page queries merge in Python exactly as the cursor compares them."""
    return [c.collate("C") for c in cols] if conn.dialect.name == "postgresql" else cols


def _page(conn: Connection, q: Any, keys: list[Any], f: Filters) -> list[tuple[Any, ...]]:
    """The first limit + 1 rows after the cursor; ``keys`` as ``_ordered`` gives them (and selected)."""
    if f.cursor is not None:
        q = q.where(tuple_(*keys) > tuple_(*(literal(v) for v in f.cursor)))
    return [tuple(r) for r in conn.execute(q.order_by(*keys).limit(f.limit + 1))]


def _workloads_page(conn: Connection, f: Filters) -> tuple[list[dict[str, Any]], tuple[Any, ...] | None]:
    """Two page queries merged: containers running the scanned image manifest itself, and
    containers running an image index (a multi-platform pull by tag) whose platform images
    were scanned; each keeps the plan that starts from the matching findings."""
    ipreds = _image_predicates(conn, f)
    if ipreds is None:
        return [], None
    keys = _ordered(conn, [W.c.cluster, W.c.namespace, W.c.kind, W.c.name, I.c.repo_name, I.c.digest])
    direct = W.join(WI, WI.c.workload_id == W.c.id).join(
        I, and_(I.c.digest == WI.c.digest, _runs(WI.c.repo_name, I.c.repo_name))
    )
    via_index = (
        W.join(WI, WI.c.workload_id == W.c.id)
        .join(MR, and_(MR.c.digest == WI.c.digest, MR.c.kind == "manifest"))
        .join(R, and_(R.c.id == MR.c.repo_id, _runs(WI.c.repo_name, R.c.name)))
        .join(I, and_(I.c.repo_name == R.c.name, I.c.digest == MR.c.ref_digest))
    )
    found: set[tuple[Any, ...]] = set()
    for joined in (direct, via_index):
        if f.owner is not None:
            joined = joined.join(C, and_(C.c.repo_name == I.c.repo_name, C.c.digest == I.c.digest))
        q = select(W.c.id, *keys).distinct().select_from(joined).where(*_workload_predicates(f), *ipreds)
        found.update(_page(conn, q, keys, f))
    merged = sorted(found, key=lambda r: r[1:])[: f.limit + 1]
    more = tuple(merged[f.limit - 1][1:]) if len(merged) > f.limit else None
    page = merged[: f.limit]
    if not page:
        return [], None
    image_keys = sorted({(r[5], r[6]) for r in page})
    wl = _workload_details(conn, [r[0] for r in page])
    details = _image_details(conn, image_keys, f)
    parents = _index_parents(conn, image_keys)
    rows = []
    for r in page:
        wid, repo, digest = r[0], r[5], r[6]
        w = wl[wid]
        runs = {digest} | parents.get((repo, digest), set())
        containers = [c for c in w["containers"] if c["digest"] in runs and c["repo_name"] in (None, repo)]
        via = sorted({c["digest"] for c in containers} - {digest})
        rows.append(
            {
                "workload": w["workload"],
                "containers": [{k: c[k] for k in ("name", "type", "image_ref")} for c in containers],
                "image": {
                    "repository": repo,
                    "digest": digest,
                    "ref": f"{repo}@{digest}",
                    "digest_source": _best_source(c["digest_source"] for c in containers),
                    "index_digest": via[0] if via else None,  # the container runs this index
                },
                **details[(repo, digest)],
            }
        )
    return rows, more


def _index_parents(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    """The image indexes of the same repository that list each image."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    wanted = set(keys)
    for part in _chunks(sorted({d for _, d in keys})):
        q = (
            select(R.c.name, MR.c.ref_digest, MR.c.digest)
            .select_from(MR.join(R, R.c.id == MR.c.repo_id))
            .where(MR.c.ref_digest.in_(part), MR.c.kind == "manifest")
        )
        for repo, child, index in conn.execute(q):
            if (repo, child) in wanted:
                out[(repo, child)].add(index)
    return out


def _images_page(conn: Connection, f: Filters) -> tuple[list[dict[str, Any]], tuple[Any, ...] | None]:
    ipreds = _image_predicates(conn, f)
    if ipreds is None:
        return [], None
    keys = _ordered(conn, [I.c.repo_name, I.c.digest])
    joined = I.outerjoin(C, and_(C.c.repo_name == I.c.repo_name, C.c.digest == I.c.digest)) if f.owner else I
    q = select(*keys).select_from(joined).where(*ipreds)
    wpreds = _workload_predicates(f)
    runs_itself = (
        select(WI.c.id)
        .select_from(WI.join(W, W.c.id == WI.c.workload_id))
        .where(WI.c.digest == I.c.digest, _runs(WI.c.repo_name, I.c.repo_name), *wpreds)
        .exists()
    )
    runs_index = (
        select(WI.c.id)
        .select_from(
            R.join(MR, MR.c.repo_id == R.c.id).join(WI, WI.c.digest == MR.c.digest).join(W, W.c.id == WI.c.workload_id)
        )
        .where(
            R.c.name == I.c.repo_name,
            MR.c.ref_digest == I.c.digest,
            MR.c.kind == "manifest",
            _runs(WI.c.repo_name, I.c.repo_name),
            *wpreds,
        )
        .exists()
    )
    running = or_(runs_itself, runs_index)
    if f.running is True or (f.running is None and f.on_workloads):
        q = q.where(running)
    elif f.running is False:
        q = q.where(~running)
    found = _page(conn, q, keys, f)
    more = tuple(found[f.limit - 1]) if len(found) > f.limit else None
    page = [(r[0], r[1]) for r in found[: f.limit]]
    if not page:
        return [], None
    details = _image_details(conn, page, f)
    runs = _running(conn, page, f)
    rows = []
    for repo, digest in page:
        wls = runs.get((repo, digest), [])
        rows.append(
            {
                "image": {"repository": repo, "digest": digest, "ref": f"{repo}@{digest}"},
                **details[(repo, digest)],
                "workload_count": len(wls),
                "exposed_count": sum(1 for w in wls if w["exposed"]),
                "workloads": wls[:MAX_WORKLOADS],
            }
        )
    return rows, more


# -- details of one page ----------------------------------------------------------------------------


def _chunks(items: Sequence[Any], n: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _json(raw: Any) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _best_source(sources: Iterable[str | None]) -> str | None:
    """How the digest was learnt, the most direct first: status (what runs) > spec > tag."""
    order = {"status": 0, "spec": 1, "tag": 2}
    found = sorted((s for s in sources if s), key=lambda s: order.get(s, 3))
    return found[0] if found else None


def _workload_details(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    uniq = sorted(set(ids))
    for part in _chunks(uniq):
        for r in conn.execute(select(W).where(W.c.id.in_(part))).mappings():
            out[r["id"]] = {
                "workload": {
                    "cluster": r["cluster"],
                    "namespace": r["namespace"],
                    "kind": r["kind"],
                    "name": r["name"],
                    "exposed": bool(r["exposed"]),
                    "exposure": _json(r["exposure"]) or [],
                },
                "containers": [],
            }
        q = select(WI).where(WI.c.workload_id.in_(part)).order_by(WI.c.workload_id, WI.c.container)
        for c in conn.execute(q).mappings():
            out[c["workload_id"]]["containers"].append(
                {
                    "name": c["container"],
                    "type": c["container_type"],
                    "image_ref": c["image_ref"],
                    "digest": c["digest"],
                    "digest_source": c["digest_source"],
                    "repo_name": c["repo_name"],
                }
            )
    return out


def _image_details(conn: Connection, keys: Sequence[tuple[str, str]], f: Filters) -> dict[tuple[str, str], Any]:
    """Findings that matched, build source, owner, grade and lifecycle of each image."""
    digests = sorted({d for _, d in keys})
    wanted = set(keys)
    info: dict[tuple[str, str], dict[str, Any]] = {}
    findings: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    fp = finding_predicates(conn, f) or []
    for part in _chunks(digests):
        q = (
            select(I.c.repo_name, I.c.digest, I.c.grade, I.c.lifecycle, C.c.owner, C.c.owner_kind, C.c.stage)
            .add_columns(C.c.replacement)
            .select_from(I.outerjoin(C, and_(C.c.repo_name == I.c.repo_name, C.c.digest == I.c.digest)))
            .where(I.c.digest.in_(part))
        )
        for r in conn.execute(q).mappings():
            if (r["repo_name"], r["digest"]) in wanted:
                info[(r["repo_name"], r["digest"])] = dict(r)
        q = (
            select(F)
            .where(F.c.digest.in_(part), *fp)
            .order_by(F.c.severity_rank.desc(), F.c.kev.desc(), F.c.advisory_id, F.c.package)
        )
        for r in conn.execute(q).mappings():
            if (r["repo_name"], r["digest"]) in wanted:
                findings[(r["repo_name"], r["digest"])].append(dict(r))
    sources = _sources(conn, keys)
    shown = sorted({x["advisory_id"] for fs in findings.values() for x in fs[:MAX_FINDINGS]})
    aliases: dict[str, list[str]] = defaultdict(list)
    for part in _chunks(shown):
        for alias, adv in conn.execute(
            select(A.c.alias, A.c.advisory_id).where(A.c.advisory_id.in_(part)).order_by(A.c.alias)
        ):
            aliases[adv].append(alias)
    out: dict[tuple[str, str], Any] = {}
    for key in keys:
        i = info.get(key) or {}
        fs = findings.get(key, [])
        prov = _ordered_sources(sources.get(key, []))
        eol = eol_view(_json(i.get("lifecycle")))
        out[key] = {
            "findings": [_finding(x, aliases.get(x["advisory_id"], [])) for x in fs[:MAX_FINDINGS]],
            "finding_count": len(fs),
            "source": prov[0] if prov else None,
            "provenance": prov,
            "owner": {"name": i["owner"], "kind": i.get("owner_kind")} if i.get("owner") else None,
            "grade": i.get("grade") or "unknown",
            "lifecycle": {
                "stage": i.get("stage") or "staging",
                "replacement": i.get("replacement"),
                "eol_status": (eol or {}).get("status"),
                "os": (eol or {}).get("os"),
            },
        }
    return out


def _finding(r: dict[str, Any], aliases: list[str]) -> dict[str, Any]:
    return {
        "id": r["advisory_id"],
        "aliases": aliases,
        "severity": r["severity"],
        "package": r["package"],
        "version": r["version"],
        "ecosystem": r["ecosystem"],
        "fix_available": bool(r["fix_available"]),
        "kev": bool(r["kev"]),
        "suppressed": bool(r["suppressed"]),
    }


def _sources(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Provenance rows of each image and of the image indexes that list it (a tool may attest
    the index a multi-platform build pushed rather than each platform image)."""
    parents = _index_parents(conn, keys)
    owners: dict[str, list[tuple[tuple[str, str], str | None]]] = defaultdict(list)  # digest -> (image, via)
    for key in keys:
        owners[key[1]].append((key, None))
        for index in parents.get(key, ()):
            owners[index].append((key, "index"))
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for part in _chunks(sorted(owners)):
        for r in conn.execute(select(P).where(P.c.digest.in_(part))).mappings():
            for key, via in owners[r["digest"]]:
                out[key].append({**r, "via": via})
    return out


def _ordered_sources(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every source's claim, best first: by rank, the image's own rows before its index's, newest
    first (``hallmark.provenance.store.rank``: verified, signed but not verified, CI, unsigned
    statements, annotations, labels). A row's repository is only where the digest was first
    seen, so none is left out."""

    def key(r: dict[str, Any]) -> tuple[int, bool, float, str]:
        created = r["created_at"]
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        return rank(r), r["via"] is not None, -(created.timestamp() if created else 0.0), r["origin"]

    return [
        {
            "repository": r["source_repo"],
            "commit": r["revision"],
            "pipeline": r["pipeline"],
            "run_id": r["run_id"],
            "run_url": r["run_url"],
            "builder_id": r["builder_id"],
            "kind": r["kind"],
            "origin": r["origin"],
            "verified": r["verified"],
            "via": r["via"],  # "index": attached to the image index that lists this image
        }
        for r in sorted(rows, key=key)
    ]


def _running(conn: Connection, keys: Sequence[tuple[str, str]], f: Filters) -> dict[tuple[str, str], list[Any]]:
    """The workloads (matching the workload filters) that run each image, itself or by its index."""
    targets: dict[str, list[tuple[str, str]]] = defaultdict(list)  # digest a container runs -> images
    for key in keys:
        targets[key[1]].append(key)
    for key, indexes in _index_parents(conn, keys).items():
        for index in indexes:
            targets[index].append(key)
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    seen: set[tuple[Any, ...]] = set()
    cols = [W.c.cluster, W.c.namespace, W.c.kind, W.c.name, W.c.exposed, WI.c.digest, WI.c.repo_name]
    for part in _chunks(sorted(targets)):
        q = (
            select(*cols)
            .distinct()
            .select_from(W.join(WI, WI.c.workload_id == W.c.id))
            .where(WI.c.digest.in_(part), *_workload_predicates(f))
        )
        for r in conn.execute(q).mappings():
            for repo, digest in targets[r["digest"]]:
                ident = (repo, digest, r["cluster"], r["namespace"], r["kind"], r["name"])
                if r["repo_name"] not in (None, repo) or ident in seen:
                    continue
                seen.add(ident)
                out[(repo, digest)].append(
                    {k: r[k] for k in ("cluster", "namespace", "kind", "name")} | {"exposed": bool(r["exposed"])}
                )
    for wls in out.values():
        wls.sort(key=lambda w: (w["cluster"], w["namespace"], w["kind"], w["name"]))
    return out
