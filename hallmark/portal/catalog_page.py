"""The catalog page: one card per image the viewer may pull, found with the catalog API's search.

The search is ``hallmark.discovery.search`` (``make_query`` -> ``find`` -> ``entries``), exactly
as ``GET /api/v1/catalog`` runs it: the same filters (name/text, package, version range, purl,
advisory with its aliases, stage, grade, OS release, end of life, owner, KEV, fix available),
the same ranking (approved first, better grade, newest), cut to the repositories the viewer
may pull before the page is built. Details are read for the shown cards only, so the page costs
about the same with ten or ten thousand repositories beyond the search itself.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from hallmark.lifecycle.health import GRADES

if TYPE_CHECKING:
    from aiohttp import web

    from hallmark.discovery.search import Key
    from hallmark.portal.routes import Portal
    from hallmark.portal.session import Viewer

SHOWN = 60  # cards per page (``page`` parameter for the next ones)
CHUNK = 500
TEXT_LIMIT = 200
TEXT_FILTERS = ("q", "stage", "owner", "grade", "package", "version", "purl", "advisory", "os", "eol")
FLAG_FILTERS = ("kev", "fix_available")
EOL_CHOICES = (("eol", "past end of life"), ("eol_soon", "end of life soon"), ("supported", "supported"))


def pull_host(portal: Portal, request: web.Request) -> str:
    """The registry host to pull from: the configured public URL's host, else the request's."""
    from urllib.parse import urlsplit

    public = portal.hm.config.server.public_url
    return (urlsplit(public).netloc if public else "") or request.host


def filters_of(request: web.Request) -> dict[str, str]:
    """The form's filters (empty ones dropped; a ticked box sends ``true``)."""
    q = request.query
    out = {k: q.get(k, "").strip()[:TEXT_LIMIT] for k in TEXT_FILTERS if q.get(k, "").strip()}
    out.update({k: "true" for k in FLAG_FILTERS if q.get(k, "").strip().lower() in ("true", "on", "1", "yes")})
    return out


def load(portal: Portal, viewer: Viewer, filters: dict[str, str], number: int = 1) -> tuple[list[dict[str, Any]], int]:
    """Page ``number`` of ``SHOWN`` cards, ranked, and how many images matched (``SearchError`` on bad input)."""
    from hallmark.discovery import search as discovery

    query = discovery.make_query(dict(filters))
    soon = portal.hm.config.lifecycle.eol_soon_days
    meta = portal.meta
    start = (number - 1) * SHOWN
    found = discovery.find(meta, query, soon, window=(start, SHOWN) if reads_everything(viewer) else None)
    if found.total is not None:  # the page cut in SQL: nothing to filter by permission
        page, total = found.keys, found.total
    else:
        keys = [k for k in found.keys if viewer.can_read(k[0])]
        page, total = keys[start : start + SHOWN], len(keys)
    cards = discovery.entries(meta, page, found, soon)
    scanned, tags, replacement = _details(portal, page)
    for c in cards:
        key = (c["repository"], c["digest"])
        c["scanned_at"] = scanned.get(key)
        c["tags"] = sorted(tags.get(key, []))[:5]
        c["replacement"] = replacement.get(key)
    return cards, total


def reads_everything(viewer: Viewer) -> bool:
    """Whether the viewer may pull every repository (access control off, or an administrator's
    own unrestricted session): then the search can cut the page in SQL."""
    from hallmark.access.model import ADMINISTRATOR

    perms = viewer.perms
    if perms is None:
        return True
    ident = perms.identity
    return perms.has_role(ADMINISTRATOR) and ident.token_scopes is None and ident.jwt_access is None


def _details(
    portal: Portal, keys: list[Key]
) -> tuple[dict[Key, dt.datetime], dict[Key, list[str]], dict[Key, str | None]]:
    """Last scan, tags and declared replacement of the shown images: three queries, not one per card."""
    from sqlalchemy import select

    from hallmark.catalog.tables import catalog_entries
    from hallmark.metadata.tables import repositories, tags
    from hallmark.pipeline.tables import images

    wanted = set(keys)
    digests = sorted({d for _, d in keys})
    scanned: dict[Key, dt.datetime] = {}
    names: dict[Key, list[str]] = {}
    replacement: dict[Key, str | None] = {}
    with portal.meta.engine.connect() as conn:
        for i in range(0, len(digests), CHUNK):
            part = digests[i : i + CHUNK]
            for row in conn.execute(
                select(images.c.repo_name, images.c.digest, images.c.updated_at).where(images.c.digest.in_(part))
            ):
                when = row[2]
                if (row[0], row[1]) in wanted and isinstance(when, dt.datetime):
                    scanned[(row[0], row[1])] = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
            q = (
                select(repositories.c.name, tags.c.digest, tags.c.name)
                .select_from(tags.join(repositories))
                .where(tags.c.digest.in_(part))
            )
            for row in conn.execute(q):
                names.setdefault((str(row[0]), str(row[1])), []).append(str(row[2]))
            q = select(catalog_entries.c.repo_name, catalog_entries.c.digest, catalog_entries.c.replacement).where(
                catalog_entries.c.digest.in_(part), catalog_entries.c.replacement.is_not(None)
            )
            for row in conn.execute(q):
                replacement[(str(row[0]), str(row[1]))] = row[2]
    return scanned, names, replacement


async def page(portal: Portal, request: web.Request) -> web.StreamResponse:
    from hallmark.catalog.service import STAGES
    from hallmark.discovery.search import SearchError

    viewer = await portal.viewer(request)
    filters = filters_of(request)
    error = None
    cards: list[dict[str, Any]] = []
    total = 0
    raw = request.query.get("page", "1")
    number = min(int(raw), 100_000) if raw.isdigit() and int(raw) > 0 else 1
    try:
        cards, total = await portal.run(load, portal, viewer, filters, number)
    except SearchError as exc:
        error = str(exc)
    return portal.render(
        request,
        "catalog.html",
        viewer,
        status=400 if error else 200,
        cards=cards,
        total=total,
        shown=SHOWN,
        number=number,
        pages=max(1, -(-total // SHOWN)),
        query_string=urlencode(filters),
        filters=filters,
        error=error,
        stages=STAGES,
        grades=GRADES,
        eol_choices=EOL_CHOICES,
        host=pull_host(portal, request),
    )
