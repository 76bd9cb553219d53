"""The advisory page: every image an advisory (or any of its aliases) affects, and where each runs.

Read through ``hallmark.explore.query.explore`` (images view, the ``image_findings`` rows and the
cluster inventories), the function behind ``GET /api/v1/explore``; images the viewer may not pull
are left out, so the page shows what the viewer could find by opening each image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from aiohttp import web

    from hallmark.portal.routes import Portal

LIMIT = 1000


async def lookup(portal: Portal, request: web.Request) -> web.StreamResponse:
    """The search box of the advisories page: go to the advisory's own page."""
    ident = request.query.get("id", "").strip()[:128]
    if not ident:
        return portal.redirect(request, "/advisories")
    return portal.redirect(request, "/advisories/" + quote(ident, safe=""))


async def page(portal: Portal, request: web.Request) -> web.StreamResponse:
    from hallmark.explore.filters import ExploreError, parse_filters
    from hallmark.explore.query import explore
    from hallmark.portal.session import PortalFailure

    viewer = await portal.viewer(request)
    ident = request.match_info["advisory"]
    params = {"cve": ident, "view": "images", "include_suppressed": "true", "limit": str(LIMIT)}
    try:
        filters = parse_filters(params)
    except ExploreError as exc:
        raise PortalFailure(400, f"{ident!r} is not an advisory id ({exc}). Search for CVE-…, GHSA-…, DSA-…") from exc
    result = await portal.run(explore, portal.meta, filters)
    rows: list[dict[str, Any]] = [r for r in result["rows"] if viewer.can_read(r["image"]["repository"])]
    aliases = sorted({a for r in rows for f in r["findings"] for a in [f["id"], *f["aliases"]]} - {ident})
    workloads = sorted(
        {(w["cluster"], w["namespace"], w["kind"], w["name"], w["exposed"]) for r in rows for w in r["workloads"]}
    )
    fixable = sum(1 for r in rows if any(f["fix_available"] for f in r["findings"]))
    return portal.render(
        request,
        "advisory.html",
        viewer,
        advisory=ident,
        aliases=aliases,
        rows=rows,
        workloads=workloads,
        fixable=fixable,
        kev=any(f["kev"] for r in rows for f in r["findings"]),
        more=result["next_cursor"] is not None,
    )
