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

from hallmark.lifecycle.health import GRADES

if TYPE_CHECKING:
    from aiohttp import web

    from hallmark.portal.routes import Portal, Viewer

STAGE_ORDER = ("approved", "staging", "deprecated", "retired")
SHOWN = 300
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


def load(portal: Portal, viewer: Viewer, filters: dict[str, str]) -> list[dict[str, Any]]:
    """Cards for the filters (raises ``CatalogError`` on bad input, like the API)."""
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
    wanted = {(e["repository"], e["digest"]) for e in entries}
    images = {
        (i["repository"], i["digest"]): i
        for i in portal.store.list_images(None)
        if (i["repository"], i["digest"]) in wanted
    }
    soon = portal.hm.config.lifecycle.eol_soon_days
    cards = []
    for e in entries:
        img = images.get((e["repository"], e["digest"])) or {}
        distro = img.get("distro") or {}
        lifecycle = lifecycle_view(img.get("lifecycle"), soon_days=soon) or {}
        os_name = lifecycle.get("os") or distro.get("pretty_name")
        if not os_name and distro.get("id"):
            os_name = f"{distro['id']} {distro.get('version_id') or ''}".strip()
        cards.append(
            {
                **e,
                "tags": portal.meta.tags_for(e["repository"], e["digest"])[:5],
                "os": os_name,
                "eol_status": lifecycle.get("status"),
                "updated_at_image": img.get("updated_at"),
            }
        )
    cards.sort(key=_rank)
    return cards


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
    try:
        cards = await portal.run(load, portal, viewer, filters)
    except CatalogError as exc:
        error = str(exc)
    return portal.render(
        request,
        "catalog.html",
        viewer,
        status=400 if error else 200,
        cards=cards[:SHOWN],
        total=len(cards),
        shown=SHOWN,
        filters=filters,
        error=error,
        stages=STAGES,
        grades=GRADES,
        host=pull_host(portal, request),
        content_filters=accepted_content_filters(CatalogService(portal.hm.pipeline).search),
    )
