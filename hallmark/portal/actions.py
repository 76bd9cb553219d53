"""Portal actions on images: stage changes and VEX triage, each a POST form with the CSRF token.

Every route declares the same need as its API twin (``hallmark.web.authz``: checked, with the
CSRF token, before the handler runs) and calls the same service, which audits as the API does:
``CatalogService.promote`` records ``promote`` (allowed or denied), the VEX form records
``vex.upload`` like ``POST .../vex``, and ``AccessService`` records ``robot.create``/``robot.revoke``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import orjson

from hallmark.digest import is_digest
from hallmark.web.auth import client_addr
from hallmark.web.authz import ADMINISTRATOR

if TYPE_CHECKING:
    from aiohttp import web

    from hallmark.portal.routes import Portal
    from hallmark.portal.session import Viewer


def may(viewer: Viewer, role: str) -> bool:
    """Whether to offer a form (the route's declaration decides whether it is accepted)."""
    return viewer.perms is None or viewer.perms.has_role(role) or viewer.perms.has_role(ADMINISTRATOR)


def next_stages(stage: str) -> list[str]:
    from hallmark.catalog.service import TRANSITIONS

    return sorted(t for f, t in TRANSITIONS if f == stage)


def _image(request: web.Request) -> tuple[str, str]:
    from hallmark.portal.session import PortalFailure

    name, digest = request.match_info["name"], request.match_info["digest"]
    if not is_digest(digest):
        raise PortalFailure(404, "No such image.")
    return name, digest


def _back(name: str, digest: str) -> str:
    return f"/repositories/{name}/images/{digest}"


async def promote(portal: Portal, request: web.Request) -> web.StreamResponse:
    """Promote, deprecate or retire (``role(SECURITY_REVIEWER, repo_action=PULL)``, as the API)."""
    from hallmark.catalog.service import CatalogError, CatalogService, GateFailed
    from hallmark.portal.session import PortalFailure

    form = await portal.check_form(request)
    viewer = await portal.viewer(request)
    name, digest = _image(request)
    to, reason = form.get("to", ""), form.get("reason", "").strip()[:2000]
    replacement = form.get("replacement", "").strip()[:400] or None
    access = portal.access(request)
    service = CatalogService(portal.hm.pipeline)
    try:
        await portal.run(
            lambda: service.promote(
                name,
                digest,
                to,
                viewer.name or (request.remote or "anonymous"),
                reason,
                force=form.get("force") == "on",
                audit=access.audit if access is not None else None,
                client_addr=client_addr(request),
                replacement=replacement,
            )
        )
    except GateFailed as exc:
        raise PortalFailure(409, f"{exc}. Fix what the gates name, or approve with force and a reason.") from exc
    except CatalogError as exc:
        raise PortalFailure(exc.status, f"{exc}.") from exc
    return portal.redirect(request, _back(name, digest) + "#catalog-stage")


def vex_document(name: str, digest: str, advisory: str, form: dict[str, str], author: str) -> dict[str, Any]:
    """One OpenVEX statement about ``advisory`` in this image, with Hallmark's ``valid_until``."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    statement: dict[str, Any] = {
        "vulnerability": {"name": advisory},
        "products": [{"@id": f"{name}@{digest}"}],
        "status": form.get("status", ""),
        "timestamp": now.isoformat().replace("+00:00", "Z"),
    }
    if form.get("justification"):
        statement["justification"] = form["justification"]
    text = form.get("statement", "").strip()[:2000]
    if text:
        statement["impact_statement" if statement["status"] == "not_affected" else "action_statement"] = text
    expiry = form.get("expires", "").strip()
    if expiry:
        statement["valid_until"] = f"{expiry}T23:59:59Z"
    return {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": f"hallmark-portal/{name}@{digest}/{advisory}/{int(now.timestamp())}",
        "author": author,
        "timestamp": statement["timestamp"],
        "version": 1,
        "statements": [statement],
    }


async def vex(portal: Portal, request: web.Request) -> web.StreamResponse:
    """VEX triage of one finding (``role(SECURITY_REVIEWER, repo_action=PULL)``, as ``POST .../vex``)."""
    from hallmark.portal.session import PortalFailure
    from hallmark.report.vex import VexError, parse_vex

    form = await portal.check_form(request)
    viewer = await portal.viewer(request)
    name, digest = _image(request)
    advisory = form.get("advisory", "").strip()[:200]
    if not advisory:
        raise PortalFailure(400, "Choose the finding to triage.")
    expiry = form.get("expires", "").strip()
    if expiry:
        try:
            day = dt.date.fromisoformat(expiry)
        except ValueError:
            raise PortalFailure(400, "The expiry must be a date (YYYY-MM-DD).") from None
        if day < dt.datetime.now(dt.UTC).date():
            raise PortalFailure(400, "The expiry is in the past; pick a later date or leave it empty.")
    author = viewer.name or (request.remote or "anonymous")
    text = orjson.dumps(vex_document(name, digest, advisory, form, author)).decode()
    try:
        parsed = parse_vex(text, source="portal")
    except VexError as exc:
        raise PortalFailure(400, f"The triage is not valid VEX: {exc}.") from exc
    if not parsed.statements:
        raise PortalFailure(400, "The triage was not accepted: " + "; ".join(parsed.warnings))
    store, pipeline = portal.store, portal.hm.pipeline
    vex_id = await portal.run(store.add_vex, name, digest, text, author)
    await portal.run(pipeline.jobs.enqueue, "match", f"{name}@{digest}", {"repo": name, "digest": digest})
    pipeline.wake()
    access = portal.access(request)
    if access is not None:
        await access.audit.record_durable(
            author,
            "vex.upload",
            repo=name,
            digest=digest,
            client_addr=client_addr(request),
            detail={"id": vex_id, "advisory": advisory, "status": form.get("status"), "via": "portal"},
        )
    return portal.redirect(request, _back(name, digest) + "?triaged=" + str(vex_id) + "#findings")
