"""Image status, reports, events and advisory sets (``/api/v1``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from hallmark.access.model import PULL, PUSH
from hallmark.api.common import IMAGE_PATH, ApiError, image_ref, json_response, parse_body
from hallmark.api.guards import audit, visible
from hallmark.pipeline.service import Pipeline
from hallmark.registry.names import valid_name
from hallmark.registry.service import RegistryService
from hallmark.web.authz import LOGIN, repo, role, route

REPORT_KINDS = ("sbom-cyclonedx", "sbom-spdx", "vulnerabilities", "content")


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mirror: str | None = None



def _int(request: web.Request, key: str, default: int, maximum: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    if not raw.isdigit():
        raise ApiError(400, "INVALID_INPUT", f"{key} must be a non-negative integer")
    return min(int(raw), maximum)


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run
    store = pipeline.store
    image_path = IMAGE_PATH

    async def list_images(request: web.Request) -> web.Response:
        repo = request.query.get("repository")
        if repo is not None and not valid_name(repo):
            raise ApiError(400, "NAME_INVALID", f"invalid repository name {repo!r}")
        images = await run(store.list_images, repo)
        allowed = await visible(request, list({i["repository"] for i in images}))
        from hallmark.lifecycle.eol import view as lifecycle_view
        from hallmark.lifecycle.health import view

        soon = pipeline.config.lifecycle.eol_soon_days
        for i in images:
            i["health"] = view(i)
            i["grade"] = i["health"]["grade"]
            i["lifecycle"] = lifecycle_view(i.get("lifecycle"), soon_days=soon)
        return json_response({"images": [i for i in images if i["repository"] in allowed]})

    async def get_image(request: web.Request) -> web.Response:
        name, digest = image_ref(request)
        image = await run(store.get_image, name, digest)
        if image is None:
            raise ApiError(404, "NOT_FOUND", "image not known to the pipeline (not an image, or not indexed yet)")
        image["tags"] = await run(registry.meta.tags_for, name, digest)
        image["reports"] = await run(store.report_kinds, name, digest)
        from hallmark.signing.service import verification_status

        image["verification"] = await run(verification_status, pipeline, name, digest)
        from hallmark.catalog.service import catalog_entry

        image["catalog"] = await run(catalog_entry, pipeline, name, digest)
        from hallmark.provenance.store import summary_for

        image["provenance"] = await run(summary_for, registry.meta, digest)
        from hallmark.lifecycle.tags import image_expiration

        image["expiration"] = await run(image_expiration, registry.meta, registry.blobs, pipeline.config, name, digest)
        from hallmark.lifecycle.health import view

        image["health"] = view(image)
        image["grade"] = image["health"]["grade"]
        from hallmark.lifecycle.eol import view as lifecycle_view

        image["lifecycle"] = lifecycle_view(image.get("lifecycle"), soon_days=pipeline.config.lifecycle.eol_soon_days)
        from hallmark.discovery.base import base_and_advice  # base image and upgrade advice

        image.update(await run(base_and_advice, pipeline.meta, name, digest, pipeline.config.lifecycle.eol_soon_days))
        return json_response(image)

    async def get_report(request: web.Request) -> web.StreamResponse:
        name, digest = image_ref(request)
        kind = request.match_info["kind"]
        if kind not in REPORT_KINDS:
            raise ApiError(400, "INVALID_INPUT", f"unknown report kind {kind!r} (known: {', '.join(REPORT_KINDS)})")
        report = await run(store.get_report, name, digest, kind)
        if report is None:
            raise ApiError(404, "NOT_FOUND", f"no {kind} report for this image yet")
        fmt = request.query.get("format", "json")
        doc: Any = report["doc"]
        if fmt != "json":
            from hallmark.report import FORMATS, media_type, render

            if fmt not in FORMATS or kind != "vulnerabilities":
                raise ApiError(400, "INVALID_INPUT", f"format {fmt!r} not available for {kind} (json always is)")
            content = await run(store.get_report, name, digest, "content")
            if content is not None:
                doc = {**doc, "content_findings": content["doc"]["findings"]}
            return web.Response(body=render(doc, fmt).encode(), content_type=media_type(fmt).split(";")[0])
        resp = json_response(doc)
        if report["artifact_digest"]:
            resp.headers["Hallmark-Artifact-Digest"] = report["artifact_digest"]
        if report["signature_digest"]:
            resp.headers["Hallmark-Signature-Digest"] = report["signature_digest"]
        return resp

    async def rescan(request: web.Request) -> web.Response:
        name, digest = image_ref(request)
        await run(pipeline.on_push, name, digest)
        await audit(request, "rescan", name, digest, {})
        return json_response({"queued": True}, status=202)

    async def list_events(request: web.Request) -> web.Response:
        since = _int(request, "since", 0, 2**62)
        limit = _int(request, "limit", 100, 1000)
        events = await run(store.list_events, since, limit, request.query.get("type"), request.query.get("repository"))
        allowed = await visible(request, list({e["repository"] for e in events}))
        events = [e for e in events if e["repository"] in allowed]
        return json_response({"events": events})

    async def advisories(request: web.Request) -> web.Response:
        return json_response({"sets": await run(store.advisory_set_history)})

    async def update_advisories(request: web.Request) -> web.Response:
        body = await parse_body(request, UpdateRequest)
        from hallmark.pipeline.advisory_sets import UpdateError, update

        try:
            record = await run(update, pipeline, body.mirror)
        except UpdateError as exc:
            raise ApiError(502, "UPDATE_FAILED", str(exc)) from exc
        await audit(request, "advisories.update", None, None, {"set": record["set"], "base": record["base"]})
        return json_response({"set": record["set"], "advisories": record["advisories"]}, status=201)

    return [
        route("GET", "/api/v1/images", list_images, LOGIN),
        route("GET", image_path, get_image, repo(PULL)),
        route("GET", image_path + "/reports/{kind}", get_report, repo(PULL)),
        route("POST", image_path + "/rescan", rescan, repo(PUSH)),
        route("GET", "/api/v1/events", list_events, LOGIN),
        route("GET", "/api/v1/advisories", advisories, LOGIN),
        route("POST", "/api/v1/advisories/update", update_advisories, role()),
    ]
