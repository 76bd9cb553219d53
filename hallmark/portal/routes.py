"""The web portal: server-rendered pages over the services the JSON API uses.

Nothing here reads SQL or files: pages call ``PipelineStore``, ``MetadataStore``,
``RegistryService`` and ``AccessService`` through ``hm.registry.run`` and filter by the
same permissions as ``/api/v1``, so the portal can never show more than the API would.

The page handlers and the route table; sessions, the CSRF check and rendering are in
:mod:`hallmark.portal.session` (``Portal`` inherits them).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from hallmark.access.model import AUDITOR, PULL, PUSH, SECURITY_REVIEWER, safe_next
from hallmark.digest import is_digest
from hallmark.pipeline.findings import SEVERITIES as FINDING_SEVERITIES
from hallmark.portal import access_admin, actions, admin, admin_mirrors, advisory_page, catalog_page
from hallmark.portal import image_extras as extras
from hallmark.portal.session import SECURITY_HEADERS, PortalBase, PortalFailure, Viewer
from hallmark.registry.names import valid_name
from hallmark.report.vex import JUSTIFICATIONS as VEX_JUSTIFICATIONS
from hallmark.report.vex import STATUSES as VEX_STATUSES
from hallmark.web.auth import DENIAL_PAGE, client_addr
from hallmark.web.authz import LOGIN, PUBLIC, Need, role, route

if TYPE_CHECKING:
    from hallmark.app import Hallmark

STATIC = Path(__file__).resolve().parent / "static"
NAME = "{name:[a-z0-9][a-z0-9._/-]*}"
DIGEST = "{digest:sha(?:256|512):[a-f0-9]+}"
ROBOT = "{robot:[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}}"
TEAM = "{team:[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}}"
USER = "{user:[a-zA-Z0-9][a-zA-Z0-9._@-]{0,63}}"
SEVERITIES = ("critical", "high", "medium", "low", "unknown")
CONTENT_SEVERITIES = ("critical", "high", "medium", "low", "info")
EVENTS_PAGE = 100
# Report downloads offered on the image page: (report kind, format, label).
DOWNLOADS = (
    ("sbom-cyclonedx", "json", "SBOM CycloneDX"),
    ("sbom-spdx", "json", "SBOM SPDX"),
    ("vulnerabilities", "json", "Report JSON"),
    ("vulnerabilities", "sarif", "SARIF"),
    ("vulnerabilities", "cyclonedx", "CycloneDX VEX"),
    ("vulnerabilities", "openvex", "OpenVEX"),
    ("content", "json", "Content checks JSON"),
)


def severity_key(finding: dict[str, Any]) -> tuple[int, int, str]:
    sev = finding.get("severity") or "unknown"
    order = SEVERITIES.index(sev) if sev in SEVERITIES else len(SEVERITIES)
    return (1 if finding.get("suppressed") else 0, order, str(finding.get("advisory_id") or ""))


def _content_key(finding: dict[str, Any]) -> tuple[int, str]:
    sev = finding.get("severity") or "info"
    order = CONTENT_SEVERITIES.index(sev) if sev in CONTENT_SEVERITIES else len(CONTENT_SEVERITIES)
    return (order, str(finding.get("rule_id") or ""))


class Portal(PortalBase):
    def __init__(self, hm: Hallmark) -> None:
        super().__init__(hm)
        self.css = (STATIC / "portal.css").read_bytes()
        self.js = (STATIC / "portal.js").read_bytes()

    # -- pages ----------------------------------------------------------------------------------------
    async def repositories(self, request: web.Request) -> web.StreamResponse:
        viewer = await self.viewer(request)
        query = request.query.get("q", "").strip()[:100]
        needle = query.lower()

        def load() -> list[dict[str, Any]]:
            names = [n for n in self.meta.list_repositories(None, None) if viewer.can_read(n)]
            infos = [i for i in (self.meta.repository_info(n) for n in names) if i is not None]
            if needle:
                infos = [
                    i for i in infos if needle in i["name"].lower() or needle in str(i.get("description") or "").lower()
                ]
            wanted = {i["name"] for i in infos}
            per_repo: dict[str, list[dict[str, Any]]] = {}
            for img in self.store.list_images(None):
                if img["repository"] in wanted:
                    per_repo.setdefault(img["repository"], []).append(img)
            for info in infos:
                imgs = per_repo.get(info["name"], [])
                info["images"] = len(imgs)
                info["severity"] = _sum_severity(imgs)
                info["updated_at"] = max((i["updated_at"] for i in imgs), default=None)
            return infos

        repos = await self.run(load)
        return self.render(request, "repositories.html", viewer, repos=repos, query=query, severities=SEVERITIES)

    def _repo_name(self, request: web.Request, viewer: Viewer) -> str:
        name = request.match_info["name"]
        # Unreadable and unknown look the same: the portal does not confirm that a repository exists.
        if not valid_name(name) or not viewer.can_read(name):
            raise PortalFailure(404, "No such repository, or you may not read it.")
        return name

    async def repository(self, request: web.Request) -> web.StreamResponse:
        viewer = await self.viewer(request)
        name = self._repo_name(request, viewer)
        from hallmark.signing.service import verification_status

        def load() -> dict[str, Any] | None:
            info = self.meta.repository_info(name)
            if info is None:
                return None
            images = self.store.list_images(name)
            digest_of: dict[str, str] = {}
            for img in images:
                img["tags"] = self.meta.tags_for(name, img["digest"])
                img["verification"] = verification_status(self.hm.pipeline, name, img["digest"])
                digest_of.update(dict.fromkeys(img["tags"], img["digest"]))
            # A tag on a manifest the pipeline does not index (an index, an artifact) shows without a link.
            tags = [(t, digest_of.get(t)) for t in self.meta.list_tags(name) or []]
            return {"info": info, "images": images, "tags": tags}

        data = await self.run(load)
        if data is None:
            raise PortalFailure(404, "No such repository, or you may not read it.")
        return self.render(
            request,
            "repository.html",
            viewer,
            name=name,
            severities=SEVERITIES,
            content_severities=CONTENT_SEVERITIES,
            **data,
        )

    async def image(self, request: web.Request) -> web.StreamResponse:
        viewer = await self.viewer(request)
        name = self._repo_name(request, viewer)
        digest = request.match_info["digest"]
        if not is_digest(digest):
            raise PortalFailure(404, "No such image.")
        from hallmark.catalog.service import catalog_entry
        from hallmark.signing.service import verification_status

        def load() -> dict[str, Any] | None:
            img = self.store.get_image(name, digest)
            if img is None:
                return None
            img["tags"] = self.meta.tags_for(name, digest)
            vulns = self.store.get_report(name, digest, "vulnerabilities")
            content = self.store.get_report(name, digest, "content")
            from hallmark.lifecycle.eol import view as lifecycle_view
            from hallmark.lifecycle.health import view as health_view
            from hallmark.lifecycle.pull_policy import decide
            from hallmark.lifecycle.tags import history

            cfg = self.hm.config
            img["health"] = health_view(img)
            img["lifecycle"] = lifecycle_view(img.get("lifecycle"), soon_days=cfg.lifecycle.eol_soon_days)
            return {
                "image": img,
                "pull": decide(self.meta, name, digest, cfg.lifecycle.retired_pull),
                "tag_history": [history(self.meta, cfg, name, t, limit=20) for t in img["tags"][:10]],
                "kinds": {r["kind"] for r in self.store.report_kinds(name, digest)},
                "verification": verification_status(self.hm.pipeline, name, digest),
                "catalog": catalog_entry(self.hm.pipeline, name, digest),
                "vulns": vulns["doc"] if vulns else None,
                "content": content["doc"] if content else None,
                "provenance": extras.provenance_rows(self.hm.pipeline, digest),
                "runs_in": extras.runs_in(self.hm.pipeline, digest, viewer.can_read),
                "layers": extras.layers(self.hm.pipeline, name, digest),
                "chart": extras.chart(extras.finding_history(self.hm.pipeline, img)),
                "base": extras.base_and_advice(self.hm.pipeline, name, digest, viewer.can_read),
            }

        data = await self.run(load)
        if data is None:
            raise PortalFailure(404, "This image is not known to the pipeline (not an image, or not indexed yet).")
        refs, more = await self.hm.registry.referrers(name, digest, None, None)
        referrers = [
            {
                "digest": r.digest,
                "artifact_type": r.artifact_type or r.media_type,
                "size": r.size,
                "kind": (orjson.loads(r.annotations) if r.annotations else {}).get("dev.hallmark.report.kind"),
            }
            for r in refs
        ]
        vulns = data["vulns"] or {}
        content = data["content"] or {}
        base = f"/api/v1/repositories/{name}/images/{digest}/reports/"
        downloads = [
            (label, base + kind + ("" if fmt == "json" else f"?format={fmt}"))
            for kind, fmt, label in DOWNLOADS
            if kind in data["kinds"]
        ]
        return self.render(
            request,
            "image.html",
            viewer,
            name=name,
            digest=digest,
            image=data["image"],
            verification=data["verification"],
            catalog=data["catalog"],
            pull=data["pull"],
            tag_history=data["tag_history"],
            can_push=viewer.perms is None or viewer.perms.can(name, PUSH),
            can_review=actions.may(viewer, SECURITY_REVIEWER),
            next_stages=actions.next_stages(data["catalog"]["stage"]),
            vex_statuses=VEX_STATUSES,
            vex_justifications=VEX_JUSTIFICATIONS,
            triaged=request.query.get("triaged", "")[:20],
            findings=sorted(vulns.get("findings") or [], key=severity_key),
            notes=vulns.get("notes") or [],
            content_findings=sorted(content.get("findings") or [], key=_content_key),
            downloads=downloads,
            referrers=referrers,
            more_referrers=more,
            severities=SEVERITIES,
            provenance=data["provenance"],
            runs_in=data["runs_in"],
            layers=data["layers"],
            chart=data["chart"],
            base=data["base"]["base"],
            advice=data["base"]["advice"],
        )

    async def restore_tag(self, request: web.Request) -> web.StreamResponse:
        """Move a tag back to a digest it held (the route's declaration requires push)."""
        from hallmark.lifecycle.tags import restore
        from hallmark.metadata.history import TagRestoreRefused

        form = await self.check_form(request)
        viewer = await self.viewer(request)
        name, tag, digest = request.match_info["name"], request.match_info["tag"], form.get("digest", "")
        back = form.get("back", "")
        if not is_digest(digest) or not back.startswith(f"/repositories/{name}/images/"):
            raise PortalFailure(400, "The restore form is incomplete.")
        try:
            await self.run(restore, self.meta, self.hm.config, name, tag, digest, viewer.name or "portal")
        except TagRestoreRefused as exc:
            raise PortalFailure(409, str(exc)) from exc
        access = self.access(request)
        if access is not None:
            await access.audit.record_durable(
                viewer.name or "portal",
                "tag.restore",
                name,
                digest,
                client_addr=client_addr(request),
                detail={"tag": tag, "via": "portal"},
            )
        return self.redirect(request, safe_next(back))

    async def events(self, request: web.Request) -> web.StreamResponse:
        viewer = await self.viewer(request)
        raw = request.query.get("since", "0")
        since = min(int(raw), 2**62) if raw.isdigit() else 0
        kind = request.query.get("type", "").strip()[:64] or None
        rows = await self.run(self.store.list_events, since, EVENTS_PAGE, kind, None)
        shown = [e for e in rows if viewer.can_read(e["repository"])]
        nxt = rows[-1]["id"] if len(rows) == EVENTS_PAGE else None
        return self.render(request, "events.html", viewer, events=shown, next_since=nxt, type=kind or "")

    async def advisories(self, request: web.Request) -> web.StreamResponse:
        viewer = await self.viewer(request)
        sets = await self.run(self.store.advisory_set_history)
        return self.render(request, "advisories.html", viewer, sets=sets)

    async def stylesheet(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=self.css, content_type="text/css")
        resp.headers.update(SECURITY_HEADERS)
        resp.headers["Cache-Control"] = "public, max-age=3600"
        return resp

    async def script(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=self.js, content_type="text/javascript")
        resp.headers.update(SECURITY_HEADERS)
        resp.headers["Cache-Control"] = "public, max-age=3600"
        return resp


def _sum_severity(images: list[dict[str, Any]]) -> dict[str, int]:
    """Findings of every kind (``summary.combined``), so leaked secrets or malware show in the list."""
    total = dict.fromkeys(FINDING_SEVERITIES, 0)
    for img in images:
        for sev, n in (((img.get("summary") or {}).get("combined") or {}).get("by_severity") or {}).items():
            if sev in total:
                total[sev] += int(n)
    return total


def routes(hm: Hallmark, app: web.Application | None = None) -> list[web.RouteDef]:
    """Portal routes; register them after the API so ``/api/v1`` and ``/v2`` keep their own handlers.

    Pages need a signed-in viewer, repository pages pull on the repository (refusals redirect to
    the login page or show the not-found page, see ``web.auth.authorize``).
    """
    p = Portal(hm)
    if app is not None:
        app[DENIAL_PAGE] = p.denied
    viewer, reader = LOGIN.portal, Need(login=True, repo=PULL, style="portal")
    # The API twins' declarations (api/catalog.py promote, api/vex.py upload, api/access.py robots).
    reviewer = role(SECURITY_REVIEWER, repo_action=PULL).portal
    administrator = role().portal
    return [
        route("GET", "/", p.page(p.repositories), viewer),
        route("GET", "/login", p.page(p.login_form), PUBLIC),
        route("POST", "/login", p.page(p.login), PUBLIC),
        route("POST", "/logout", p.page(p.logout), PUBLIC),
        route("GET", f"/repositories/{NAME}/images/{DIGEST}", p.page(p.image), reader),
        route("GET", f"/repositories/{NAME}", p.page(p.repository), reader),
        route(
            "POST",
            f"/repositories/{NAME}/tags/{{tag:[a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}}}/restore",
            p.page(p.restore_tag),
            Need(login=True, repo=PUSH, style="portal"),
        ),
        route("GET", "/events", p.page(p.events), viewer),
        route("GET", "/advisories", p.page(p.advisories), viewer),
        route("GET", "/advisories/{advisory:[^/]{1,128}}", p.page(partial(advisory_page.page, p)), viewer),
        route("GET", "/advisory", p.page(partial(advisory_page.lookup, p)), viewer),
        route("GET", "/catalog", p.page(partial(catalog_page.page, p)), viewer),
        route("POST", f"/repositories/{NAME}/images/{DIGEST}/promote", p.page(partial(actions.promote, p)), reviewer),
        route("POST", f"/repositories/{NAME}/images/{DIGEST}/vex", p.page(partial(actions.vex, p)), reviewer),
        route("GET", "/admin/robots", p.page(partial(admin.robots, p)), administrator),
        route("POST", "/admin/robots", p.page(partial(admin.create_robot, p)), administrator),
        route("POST", f"/admin/robots/{ROBOT}/revoke", p.page(partial(admin.revoke_robot, p)), administrator),
        route("GET", "/admin/audit", p.page(partial(admin.audit_log, p)), role(AUDITOR).portal),
        route("GET", "/admin/access", p.page(partial(access_admin.page, p)), administrator),
        route("POST", "/admin/users", p.page(partial(access_admin.create_user, p)), administrator),
        route("POST", f"/admin/users/{USER}/disabled", p.page(partial(access_admin.set_disabled, p)), administrator),
        route("POST", "/admin/teams", p.page(partial(access_admin.create_team, p)), administrator),
        route("POST", f"/admin/teams/{TEAM}/members", p.page(partial(access_admin.membership, p)), administrator),
        route("POST", "/admin/permissions", p.page(partial(access_admin.change_grant, p)), administrator),
        *admin_mirrors.routes(p),
        route("GET", "/static/portal.css", p.stylesheet, PUBLIC),
        route("GET", "/static/portal.js", p.script, PUBLIC),
    ]
