"""The catalog page: one card per image the viewer may pull, searched with the catalog API's filters.

The search runs through ``CatalogService.search``, the function behind ``GET /api/v1/catalog``,
and keeps only repositories the viewer may pull, as the API does. Search by contents (package,
version range, purl, advisory, OS release, end of life, KEV, fix available) is being added to that
service separately: ``CONTENT_FILTERS`` names the query parameters the form passes through once the
service accepts them, so the page gains them by listing them here and in ``catalog.html``.
"""

from __future__ import annotations

import datetime as dt
import inspect
from typing import TYPE_CHECKING, Any

import orjson

from hallmark.lifecycle.health import GRADES

if TYPE_CHECKING:
    from aiohttp import web

    from hallmark.portal.routes import Portal, Viewer

STAGE_ORDER = ("approved", "staging", "deprecated", "retired")
SHOWN = 300
CHUNK = 500
TEXT_LIMIT = 200
# Content filters (the other half of issue #17's search): query parameter names passed through to
# ``CatalogService.search`` as keyword arguments when it accepts them. Keep in step with the form.
CONTENT_FILTERS: tuple[str, ...] = (
    "package",
    "version",
    "purl",
    "advisory",
    "os",
    "eol",
    "kev",
    "fix",
)


def accepted_content_filters(search: Any) -> tuple[str, ...]:
    """The content filters ``search`` takes as keyword arguments (none until the content search lands)."""
    params = inspect.signature(search).parameters
    return tuple(f for f in CONTENT_FILTERS if f in params)


def pull_host(portal: Portal, request: web.Request) -> str:
    """The registry host to pull from: the configured public URL's host, else the request's."""
    from urllib.parse import urlsplit

    public = portal.hm.config.server.public_url
    return (urlsplit(public).netloc if public else "") or request.host


def _rank(card: dict[str, Any]) -> tuple[int, str, float, str]:
    """Approved first, better grade first, newest first (the order issue #17 asks of the search)."""
    stage = STAGE_ORDER.index(card["stage"]) if card["stage"] in STAGE_ORDER else len(STAGE_ORDER)
    when = card.get("updated_at_image")
    stamp = when.timestamp() if isinstance(when, dt.datetime) else 0.0
    return (stage, card.get("grade") or "unknown", -stamp, card["repository"])


def load(portal: Portal, viewer: Viewer, filters: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    """The first ``SHOWN`` cards for the filters, ranked, and how many matched (raises
    ``CatalogError`` on bad input, like the API). Details are read for the shown cards only, so
    the page costs the same with ten or ten thousand repositories beyond the search itself."""
    from hallmark.catalog.service import CatalogService
    from hallmark.lifecycle.eol import view as lifecycle_view

    service = CatalogService(portal.hm.pipeline)
    extra = {f: filters[f] for f in accepted_content_filters(service.search) if filters.get(f)}
    entries = service.search(
        stage=filters.get("stage") or None,
        q=filters.get("q") or None,
        owner=filters.get("owner") or None,
        grade=filters.get("grade") or None,
        **extra,
    )
    entries = [e for e in entries if viewer.can_read(e["repository"])]
    scanned = _scanned(portal, entries)
    for e in entries:
        e["updated_at_image"] = scanned.get((e["repository"], e["digest"]))
    entries.sort(key=_rank)
    shown = entries[:SHOWN]
    facts, tags = _details(portal, shown)
    soon = portal.hm.config.lifecycle.eol_soon_days
    for e in shown:
        key = (e["repository"], e["digest"])
        distro, lifecycle_doc = facts.get(key, (None, None))
        distro = distro or {}
        lifecycle = lifecycle_view(lifecycle_doc, soon_days=soon) or {}
        os_name = lifecycle.get("os") or distro.get("pretty_name")
        if not os_name and distro.get("id"):
            os_name = f"{distro['id']} {distro.get('version_id') or ''}".strip()
        e.update(tags=sorted(tags.get(key, []))[:5], os=os_name, eol_status=lifecycle.get("status"))
    return shown, len(entries)


def _scanned(portal: Portal, entries: list[dict[str, Any]]) -> dict[tuple[str, str], dt.datetime]:
    """When each image was last scanned (the ``images`` row's update), for the ranking and the card."""
    from sqlalchemy import select

    from hallmark.pipeline.tables import images

    digests = sorted({e["digest"] for e in entries})
    out: dict[tuple[str, str], dt.datetime] = {}
    with portal.meta.engine.connect() as conn:
        for i in range(0, len(digests), CHUNK):
            q = select(images.c.repo_name, images.c.digest, images.c.updated_at).where(
                images.c.digest.in_(digests[i : i + CHUNK])
            )
            for repo, digest, when in conn.execute(q):
                out[(repo, digest)] = when if when is None or when.tzinfo else when.replace(tzinfo=dt.UTC)
    return out


def _details(
    portal: Portal, shown: list[dict[str, Any]]
) -> tuple[dict[tuple[str, str], tuple[Any, Any]], dict[tuple[str, str], list[str]]]:
    """(distro, stored lifecycle) and tags of the shown images: two queries, not one per card."""
    from sqlalchemy import select

    from hallmark.metadata.tables import repositories, tags
    from hallmark.pipeline.tables import images

    digests = sorted({e["digest"] for e in shown})
    facts: dict[tuple[str, str], tuple[Any, Any]] = {}
    names: dict[tuple[str, str], list[str]] = {}
    if not digests:
        return facts, names
    with portal.meta.engine.connect() as conn:
        q = select(images.c.repo_name, images.c.digest, images.c.distro, images.c.lifecycle).where(
            images.c.digest.in_(digests)
        )
        for repo, digest, distro, lifecycle in conn.execute(q):
            facts[(repo, digest)] = (
                orjson.loads(distro) if distro else None,
                orjson.loads(lifecycle) if lifecycle else None,
            )
        q = (
            select(repositories.c.name, tags.c.digest, tags.c.name)
            .select_from(tags.join(repositories))
            .where(tags.c.digest.in_(digests))
        )
        for row in conn.execute(q):
            names.setdefault((str(row[0]), str(row[1])), []).append(str(row[2]))
    return facts, names


def filters_of(request: web.Request) -> dict[str, str]:
    q = request.query
    keys = ("q", "stage", "owner", "grade", *CONTENT_FILTERS)
    return {k: q.get(k, "").strip()[:TEXT_LIMIT] for k in keys if q.get(k, "").strip()}


async def page(portal: Portal, request: web.Request) -> web.StreamResponse:
    from hallmark.catalog.service import STAGES, CatalogError, CatalogService

    viewer = await portal.viewer(request)
    filters = filters_of(request)
    error = None
    cards: list[dict[str, Any]] = []
    total = 0
    try:
        cards, total = await portal.run(load, portal, viewer, filters)
    except CatalogError as exc:
        error = str(exc)
    return portal.render(
        request,
        "catalog.html",
        viewer,
        status=400 if error else 200,
        cards=cards,
        total=total,
        shown=SHOWN,
        filters=filters,
        error=error,
        stages=STAGES,
        grades=GRADES,
        host=pull_host(portal, request),
        content_filters=accepted_content_filters(CatalogService(portal.hm.pipeline).search),
    )
