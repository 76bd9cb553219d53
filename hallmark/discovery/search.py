"""Catalog search by contents: packages (name, version range, purl), advisories (and aliases),
stage, grade, OS release, end of life, owner, KEV, fix available, and full text.

Two steps so access control can sit between them: :func:`find` returns every matching image key
in rank order (approved first, better grade first, newest push first) from indexed queries, and
:func:`entries` builds the catalog entries of the page the caller may see. Content filters are
answered from ``image_packages``, ``image_findings``/``advisory_aliases`` and the text index
(FTS5 on SQLite, ``to_tsvector`` plus ``pg_trgm`` word similarity on PostgreSQL); version
ranges are compared in Python with the ecosystem's own ordering (hallmark.advisories.versions).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Text, and_, case, false, func, literal, or_, select, text, true, tuple_
from sqlalchemy.engine import Connection

from hallmark.advisories.versions import UnparseableVersion, scheme_for_ecosystem
from hallmark.catalog.store import DEFAULT_STAGE
from hallmark.catalog.tables import catalog_entries
from hallmark.discovery.packages import purl_name
from hallmark.discovery.tables import image_packages
from hallmark.lifecycle.eol import STATUSES, view
from hallmark.metadata.store import MetadataStore
from hallmark.metadata.tables import manifests, repositories
from hallmark.pipeline.findings import of_summary
from hallmark.pipeline.tables import advisory_aliases, image_findings, images

STAGE_ORDER = ("approved", "staging", "deprecated", "retired")
GRADE_ORDER = ("A", "B", "C", "D", "E", "F")
EOL_FILTERS = (*STATUSES, "unknown")
MAX_LIMIT = 1000
_OPS = ("<=", ">=", "!=", "==", "<", ">", "=")
_TOKEN = re.compile(r"\w+", re.UNICODE)
_IN_SQL = 900  # at most this many candidate digests go into the SQL query as a list


class SearchError(ValueError):
    """Bad search input (the API answers 400 with this message)."""


Key = tuple[str, str]  # (repository, digest)


@dataclass
class Query:
    stage: str | None = None
    owner: str | None = None
    grades: list[str] | None = None
    q: str | None = None
    package: str | None = None
    version: str | None = None
    purl: str | None = None
    advisory: str | None = None
    os: str | None = None
    eol: str | None = None
    kev: bool | None = None
    fix_available: bool | None = None
    limit: int = MAX_LIMIT
    offset: int = 0
    ranges: list[tuple[str, str]] = field(default_factory=list)

    @property
    def by_contents(self) -> bool:
        return bool(self.package or self.purl or self.advisory)


def parse_bool(name: str, value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise SearchError(f"{name} must be true or false, not {value!r}")


def parse_range(spec: str) -> list[tuple[str, str]]:
    """``<3.0.7``, ``>=1.0,<2.0``, ``=1.2`` or a bare version (equal) -> [(op, version)]."""
    out: list[tuple[str, str]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        op = next((o for o in _OPS if part.startswith(o)), "=")
        version = part[len(op) :].strip() if part.startswith(op) else part
        if not version or any(c.isspace() for c in version):
            raise SearchError(f"version range {spec!r}: each part is OPERATOR VERSION, e.g. <3.0.7 or >=1.0,<2.0")
        out.append(("=" if op == "==" else op, version))
    if not out:
        raise SearchError("version range is empty")
    return out


def make_query(params: Mapping[str, str | None]) -> Query:
    """A :class:`Query` from API query parameters / CLI options; raises :class:`SearchError`."""
    from hallmark.catalog.service import STAGES
    from hallmark.lifecycle.health import GradeError, parse_grades

    def get(name: str) -> str | None:
        v = params.get(name)
        return v.strip() if isinstance(v, str) and v.strip() else None

    stage = get("stage")
    if stage is not None and stage not in STAGES:
        raise SearchError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
    try:
        grades = parse_grades(get("grade"))
    except GradeError as exc:
        raise SearchError(str(exc)) from exc
    eol = get("eol")
    if eol is not None:
        eol = {"true": "eol", "false": "not_eol"}.get(eol.lower(), eol.lower())
        if eol not in (*EOL_FILTERS, "not_eol"):
            raise SearchError(f"eol must be one of {', '.join(EOL_FILTERS)}, true or false, not {eol!r}")
    purl = get("purl")
    if purl is not None and purl_name(purl) is None:
        raise SearchError(f"purl {purl!r} must start with pkg:TYPE/ (e.g. pkg:pypi/django)")
    version = get("version")
    if version is not None and not (get("package") or purl):
        raise SearchError("version needs package or purl (which package's version?)")
    try:
        limit = int(get("limit") or MAX_LIMIT)
        offset = int(get("offset") or 0)
    except ValueError as exc:
        raise SearchError("limit and offset must be whole numbers") from exc
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise SearchError(f"limit must be 1..{MAX_LIMIT} and offset 0 or more")
    query = Query(
        stage=stage,
        owner=get("owner"),
        grades=grades,
        q=get("q"),
        package=get("package"),
        version=version,
        purl=purl,
        advisory=get("advisory"),
        os=get("os"),
        eol=eol,
        kev=parse_bool("kev", get("kev")),
        fix_available=parse_bool("fix_available", get("fix_available") or get("fixable")),
        limit=limit,
        offset=offset,
    )
    if version is not None:
        query.ranges = parse_range(version)
    return query


# -- content filters: sets of image keys ------------------------------------------------------


def _in_range(ecosystem: str | None, version: str, ranges: Sequence[tuple[str, str]], cache: dict[Any, Any]) -> bool:
    """Whether ``version`` satisfies every (op, bound) under the ecosystem's ordering; a version
    the ecosystem's scheme cannot order (or no scheme) matches only ``=`` on the exact string."""
    sch = scheme_for_ecosystem(ecosystem or "")
    for op, bound in ranges:
        if sch is None:
            ok = (version == bound) if op == "=" else (version != bound) if op == "!=" else False
        else:
            try:
                a = cache.get((sch.name, version))
                if a is None:
                    a = cache[(sch.name, version)] = sch.key(version)
                b = cache.get((sch.name, bound))
                if b is None:
                    b = cache[(sch.name, bound)] = sch.key(bound)
            except UnparseableVersion:
                return False
            c = (a > b) - (a < b)
            ok = {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0, "=": c == 0, "!=": c != 0}[op]
        if not ok:
            return False
    return True


def _package_filter(query: Query) -> list[Any]:
    where = []
    if query.package:
        where.append(image_packages.c.name == query.package)
    if query.purl:
        where.append(image_packages.c.purl_name == purl_name(query.purl))
    return where


def package_matches(conn: Connection, query: Query) -> set[Key]:
    """Images holding the package (name and/or purl, within the version range).

    Reads only what the covering indexes hold (name or purl_name, version, ecosystem, repository,
    digest): a popular package is in thousands of images and a row fetch each would dominate.
    Each distinct (ecosystem, version) is compared with the range once.
    """
    if query.purl:
        exact = query.purl.split("#", 1)[0].split("?", 1)[0]
        if "@" in exact.rpartition("/")[2][1:] and not query.ranges:  # pkg:pypi/django@4.2: that version
            query.ranges = [("=", exact.rsplit("@", 1)[1])]
    c = image_packages.c
    q = select(c.repo_name, c.digest, c.version, c.ecosystem).where(*_package_filter(query))
    out: set[Key] = set()
    keys: dict[Any, Any] = {}
    verdicts: dict[tuple[str | None, str], bool] = {}
    for repo, digest, version, ecosystem in conn.execute(q):
        if query.ranges:
            ok = verdicts.get((ecosystem, version))
            if ok is None:
                ok = verdicts[(ecosystem, version)] = _in_range(ecosystem, version, query.ranges, keys)
            if not ok:
                continue
        out.add((repo, digest))
    return out


def package_details(conn: Connection, query: Query, keys: Sequence[Key]) -> dict[Key, list[dict[str, Any]]]:
    """The matched packages of the images on the page (name, version, ecosystem, purl)."""
    wanted = set(keys)
    c = image_packages.c
    q = select(c.repo_name, c.digest, c.name, c.version, c.ecosystem, c.purl).where(
        *_package_filter(query), c.digest.in_(sorted({d for _, d in keys}))
    )
    out: dict[Key, list[dict[str, Any]]] = {}
    cache: dict[Any, Any] = {}
    for r in conn.execute(q):
        if (r[0], r[1]) not in wanted or (query.ranges and not _in_range(r[4], r[3], query.ranges, cache)):
            continue
        out.setdefault((r[0], r[1]), []).append({"name": r[2], "version": r[3], "ecosystem": r[4], "purl": r[5]})
    return out


def advisory_ids(conn: Connection, advisory: str) -> set[str]:
    """The id and every advisory known by it as an alias (CVE -> DSA, GHSA -> CVE, ...)."""
    ids = {advisory}
    ids.update(
        conn.execute(select(advisory_aliases.c.advisory_id).where(advisory_aliases.c.alias == advisory)).scalars()
    )
    ids.update(
        conn.execute(select(advisory_aliases.c.alias).where(advisory_aliases.c.advisory_id == advisory)).scalars()
    )
    return ids


def advisory_matches(conn: Connection, ids: Collection[str]) -> set[Key]:
    """Images with an unsuppressed finding of any of ``ids`` (from the covering index)."""
    f = image_findings.c
    q = select(f.repo_name, f.digest).where(f.advisory_id.in_(sorted(ids)), f.suppressed == false())
    return {(r[0], r[1]) for r in conn.execute(q)}


def advisory_details(conn: Connection, ids: Collection[str], keys: Sequence[Key]) -> dict[Key, list[dict[str, Any]]]:
    """The unsuppressed findings of ``ids`` in the images on the page."""
    wanted = set(keys)
    f = image_findings.c
    q = select(f.repo_name, f.digest, f.advisory_id, f.package, f.version, f.severity, f.kev, f.fix_available).where(
        f.advisory_id.in_(sorted(ids)), f.suppressed == false(), f.digest.in_(sorted({d for _, d in keys}))
    )
    out: dict[Key, list[dict[str, Any]]] = {}
    for r in conn.execute(q):
        if (r[0], r[1]) not in wanted:
            continue
        out.setdefault((r[0], r[1]), []).append(
            {
                "advisory_id": r[2],
                "package": r[3],
                "version": r[4],
                "severity": r[5],
                "kev": bool(r[6]),
                "fix_available": bool(r[7]),
            }
        )
    return out


def flagged(conn: Connection, column: str) -> set[Key]:
    """Images with at least one unsuppressed finding whose ``kev`` / ``fix_available`` is true."""
    f = image_findings.c
    q = select(f.repo_name, f.digest).where(f[column] == true(), f.suppressed == false()).distinct()
    return {(r[0], r[1]) for r in conn.execute(q)}


def text_matches(conn: Connection, q: str) -> set[Key]:
    """Images whose text document (repository, labels, package names) matches every word of ``q``
    as a prefix; on PostgreSQL, when no word starts so, ``q`` anywhere inside a word (``ssl``
    finds ``libssl3``), answered by the pg_trgm trigram index."""
    words = _TOKEN.findall(q.lower())
    if not words:
        return set()
    if conn.dialect.name == "postgresql":
        tsq = " & ".join(f"{w}:*" for w in words)
        sql = text(
            "SELECT repo_name, digest FROM search_documents "
            "WHERE to_tsvector('simple', body) @@ to_tsquery('simple', :tsq)"
        )
        hits = {(r[0], r[1]) for r in conn.execute(sql, {"tsq": tsq})}
        if hits or len(q) < 3:
            return hits
        # nothing starts with these words: look inside words (ssl -> libssl3) through the trigram index
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql = text("SELECT repo_name, digest FROM search_documents WHERE body ILIKE :like")
        return {(r[0], r[1]) for r in conn.execute(sql, {"like": like})}
    match = " ".join(f'"{w}"*' for w in words)
    sql = text(
        "SELECT d.repo_name, d.digest FROM search_fts f JOIN search_documents d ON d.id = f.rowid "
        "WHERE search_fts MATCH :m"
    )
    return {(r[0], r[1]) for r in conn.execute(sql, {"m": match})}


# -- the ranked list --------------------------------------------------------------------------


@dataclass
class Found:
    """What :func:`find` returns: ranked keys, and what :func:`entries` needs to say what matched."""

    keys: list[Key]
    query: Query = field(default_factory=Query)
    advisory_ids: set[str] = field(default_factory=set)
    total: int | None = None  # set when ``find`` cut a window in SQL: ``keys`` is that window only


def _stage_col() -> Any:
    return func.coalesce(catalog_entries.c.stage, literal(DEFAULT_STAGE, Text))


def _os_matches(distro: str | None, wanted: str) -> bool:
    """``debian``, ``debian 12``, ``debian:12``, ``debian-12``, a codename or the pretty name."""
    if not distro:
        return wanted == "unknown"
    try:
        d = orjson.loads(distro)
    except orjson.JSONDecodeError:
        return False
    ident, ver = str(d.get("id") or "").lower(), str(d.get("version_id") or "").lower()
    names = {ident, str(d.get("codename") or "").lower(), str(d.get("pretty_name") or "").lower()}
    if ver:
        names.update({f"{ident} {ver}", f"{ident}:{ver}", f"{ident}-{ver}", f"{ident}{ver}"})
        names.add(f"{ident} {ver.split('.')[0]}")
    w = wanted.lower()
    return w in names or (w.startswith(ident + " ") and ver.startswith(w[len(ident) + 1 :] + "."))


def eol_status(lifecycle: str | None, soon_days: int) -> str | None:
    """The image's worst end-of-life status today (supported, eol_soon, eol) or None when unknown."""
    if not lifecycle:
        return None
    try:
        doc = view(orjson.loads(lifecycle), soon_days=soon_days)
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
        return None
    return (doc or {}).get("status")


def find(meta: MetadataStore, query: Query, eol_soon_days: int = 90, window: tuple[int, int] | None = None) -> Found:
    """Every image matching ``query``, best first (no paging or access control yet).

    ``window=(offset, limit)``, for a caller that may show every image: when every filter can run
    in SQL, only that window is read (``Found.total`` counts all matches), instead of every
    matching row; otherwise the whole ranked list as without it (``total`` stays None)."""
    found = Found([], query)
    with meta.engine.connect() as conn:
        candidates: set[Key] | None = None

        def narrow(keys: Iterable[Key]) -> None:
            nonlocal candidates
            keys = set(keys)
            candidates = keys if candidates is None else candidates & keys

        if query.package or query.purl:
            narrow(package_matches(conn, query))
        if query.advisory:
            found.advisory_ids = advisory_ids(conn, query.advisory)
            narrow(advisory_matches(conn, found.advisory_ids))
        excluded: set[Key] = set()
        for column, want in (("kev", query.kev), ("fix_available", query.fix_available)):
            if want is True:
                narrow(flagged(conn, column))
            elif want is False:
                excluded |= flagged(conn, column)
        text_hits = text_matches(conn, query.q) if query.q else set()
        if candidates is not None and not candidates:
            return found

        stage = _stage_col()
        grade_rank = case(*((images.c.grade == g, i) for i, g in enumerate(GRADE_ORDER)), else_=len(GRADE_ORDER))
        stage_rank = case(*((stage == s, i) for i, s in enumerate(STAGE_ORDER)), else_=len(STAGE_ORDER))
        cols: list[Any] = [images.c.repo_name, images.c.digest]
        at: dict[str, int] = {}
        extra: list[tuple[str, Any]] = []
        if query.q:
            extra += [("description", catalog_entries.c.description), ("owner", catalog_entries.c.owner)]
        if query.os:
            extra.append(("distro", images.c.distro))
        if query.eol:
            extra.append(("lifecycle", images.c.lifecycle))
        for name, col in extra:
            at[name] = len(cols)
            cols.append(col)
        sel = (
            select(*cols)
            .select_from(
                images.outerjoin(
                    catalog_entries,
                    and_(
                        catalog_entries.c.repo_name == images.c.repo_name,
                        catalog_entries.c.digest == images.c.digest,
                    ),
                )
                .outerjoin(repositories, repositories.c.name == images.c.repo_name)
                .outerjoin(
                    manifests, and_(manifests.c.repo_id == repositories.c.id, manifests.c.digest == images.c.digest)
                )
            )
            .order_by(stage_rank, grade_rank, manifests.c.created_at.desc(), images.c.repo_name, images.c.digest)
        )
        if query.stage:
            sel = sel.where(stage == query.stage)
        if query.owner:
            sel = sel.where(catalog_entries.c.owner == query.owner)
        if query.grades:
            by_grade = images.c.grade.in_(query.grades)
            sel = sel.where(or_(by_grade, images.c.grade.is_(None)) if "unknown" in query.grades else by_grade)
        if candidates is not None and len({d for _, d in candidates}) <= _IN_SQL:
            sel = sel.where(images.c.digest.in_(sorted({d for _, d in candidates})))
        needle = query.q.lower() if query.q else None
        if (
            window is not None
            and candidates is None
            and not excluded
            and not query.os
            and not query.eol
            and len(text_hits) <= _IN_SQL
        ):
            if needle is not None:
                searched = (images.c.repo_name, catalog_entries.c.description, catalog_entries.c.owner)
                conds = [func.lower(c).contains(needle, autoescape=True) for c in searched]
                if text_hits:
                    conds.append(tuple_(images.c.repo_name, images.c.digest).in_(sorted(text_hits)))
                sel = sel.where(or_(*conds))
            found.total = int(
                conn.execute(select(func.count()).select_from(sel.order_by(None).subquery())).scalar_one()
            )
            offset, limit = window
            found.keys = [(r[0], r[1]) for r in conn.execute(sel.offset(offset).limit(limit)).all()]
            return found
        for row in conn.execute(sel).all():
            key = (row[0], row[1])
            if candidates is not None and key not in candidates:
                continue
            if key in excluded:
                continue
            if needle is not None and key not in text_hits:
                hay = (row[0], row[at["description"]] or "", row[at["owner"]] or "")
                if not any(needle in h.lower() for h in hay):
                    continue
            if query.os and not _os_matches(row[at["distro"]], query.os):
                continue
            if query.eol:
                status = eol_status(row[at["lifecycle"]], eol_soon_days) or "unknown"
                if not (status == query.eol or (query.eol == "not_eol" and status != "eol")):
                    continue
            found.keys.append(key)
    return found


def entries(meta: MetadataStore, keys: Sequence[Key], found: Found, eol_soon_days: int = 90) -> list[dict[str, Any]]:
    """Catalog entries of ``keys`` (in that order): the catalog list's fields plus ``os``, ``eol``,
    ``pushed_at`` and, for content queries, the ``packages`` / ``findings`` that matched."""
    if not keys:
        return []
    wanted = set(keys)
    cols = [
        images.c.repo_name,
        images.c.digest,
        images.c.status,
        images.c.summary,
        images.c.grade,
        images.c.distro,
        images.c.lifecycle,
        _stage_col().label("stage"),
        catalog_entries.c.owner,
        catalog_entries.c.owner_kind,
        catalog_entries.c.description,
        catalog_entries.c.support_status,
        catalog_entries.c.signature_digest,
        catalog_entries.c.updated_at,
    ]
    rows: dict[Key, dict[str, Any]] = {}
    digests = sorted({d for _, d in keys})
    with meta.engine.connect() as conn:
        for i in range(0, len(digests), _IN_SQL):
            sel = (
                select(*cols)
                .select_from(
                    images.outerjoin(
                        catalog_entries,
                        and_(
                            catalog_entries.c.repo_name == images.c.repo_name,
                            catalog_entries.c.digest == images.c.digest,
                        ),
                    )
                )
                .where(images.c.digest.in_(digests[i : i + _IN_SQL]))
            )
            for r in conn.execute(sel).mappings():
                if (r["repo_name"], r["digest"]) in wanted:
                    rows[(r["repo_name"], r["digest"])] = {str(k): v for k, v in r.items()}
        pushed = _pushed_at(conn, keys)
        q = found.query
        packages = package_details(conn, q, keys) if (q.package or q.purl) else {}
        findings = advisory_details(conn, found.advisory_ids, keys) if found.advisory_ids else {}
    out = []
    for key in keys:
        d = rows.get(key)
        if d is None:
            continue  # forgotten between the two steps
        summary = d.pop("summary")
        raw_distro = d.pop("distro")
        distro = orjson.loads(raw_distro) if raw_distro else None
        entry: dict[str, Any] = {
            "repository": d.pop("repo_name"),
            "digest": d.pop("digest"),
            "image_status": d.pop("status"),
            "combined": of_summary(orjson.loads(summary)) if summary else None,
            "grade": d.pop("grade") or "unknown",
            "os": _os_label(distro),
            "eol": eol_status(d.pop("lifecycle"), eol_soon_days),
            "pushed_at": pushed.get(key),
            **d,
        }
        if key in packages:
            entry["packages"] = packages[key]
        if key in findings:
            entry["findings"] = findings[key]
        out.append(entry)
    return out


def _os_label(distro: dict[str, Any] | None) -> str | None:
    if not isinstance(distro, dict):
        return None
    return distro.get("pretty_name") or " ".join(str(distro[k]) for k in ("id", "version_id") if distro.get(k)) or None


def _pushed_at(conn: Connection, keys: Sequence[Key]) -> dict[Key, Any]:
    """When each image was pushed (its manifest's creation time), in chunks of digests."""
    wanted = set(keys)
    digests = sorted({d for _, d in keys})
    out: dict[Key, Any] = {}
    for i in range(0, len(digests), _IN_SQL):
        q = (
            select(repositories.c.name, manifests.c.digest, manifests.c.created_at)
            .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repo_id))
            .where(manifests.c.digest.in_(digests[i : i + _IN_SQL]))
        )
        part = set(digests[i : i + _IN_SQL])
        q = q.where(repositories.c.name.in_(sorted({r for r, d in wanted if d in part})))
        out.update({(r[0], r[1]): r[2] for r in conn.execute(q) if (r[0], r[1]) in wanted})
    return out


def search(meta: MetadataStore, query: Query, eol_soon_days: int = 90) -> tuple[list[dict[str, Any]], int]:
    """One call for callers without per-repository access control (the CLI): (page, total)."""
    found = find(meta, query, eol_soon_days)
    page = found.keys[query.offset : query.offset + query.limit]
    return entries(meta, page, found, eol_soon_days), len(found.keys)
