"""OpenVEX triage API: upload documents per image or globally; they apply at the next match."""

from __future__ import annotations

from aiohttp import web

from hallmark.access.model import PULL, SECURITY_REVIEWER
from hallmark.api.common import IMAGE_PATH, ApiError, image_ref, json_response
from hallmark.api.guards import actor, audit, visible
from hallmark.pipeline.service import Pipeline
from hallmark.registry.names import valid_name
from hallmark.registry.service import RegistryService
from hallmark.web.authz import LOGIN, role, route

MAX_VEX_BYTES = 4 << 20


async def _read_doc(request: web.Request) -> str:
    from hallmark.report.vex import VexError, parse_vex

    raw = await request.content.read(MAX_VEX_BYTES + 1)
    if len(raw) > MAX_VEX_BYTES:
        raise ApiError(413, "TOO_LARGE", f"VEX documents are limited to {MAX_VEX_BYTES} bytes")
    try:
        doc = parse_vex(raw, source="upload")
    except VexError as exc:
        raise ApiError(400, "INVALID_VEX", str(exc)) from exc
    if not doc.statements:
        raise ApiError(400, "INVALID_VEX", "the document has no usable statement: " + "; ".join(doc.warnings))
    return raw.decode("utf-8")


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run
    store = pipeline.store
    image_path = IMAGE_PATH + "/vex"

    async def upload_global(request: web.Request) -> web.Response:
        doc = await _read_doc(request)
        vex_id = await run(store.add_vex, None, None, doc, await actor(request))
        await run(pipeline.jobs.enqueue, "rematch", f"vex-{vex_id}", {"vex": vex_id})
        pipeline.wake()
        await audit(request, "vex.upload", None, None, {"id": vex_id})
        return json_response({"id": vex_id, "scope": "global"}, status=201)

    async def upload_image(request: web.Request) -> web.Response:
        name, digest = image_ref(request)
        doc = await _read_doc(request)
        vex_id = await run(store.add_vex, name, digest, doc, await actor(request))
        await run(pipeline.jobs.enqueue, "match", f"{name}@{digest}", {"repo": name, "digest": digest})
        pipeline.wake()
        await audit(request, "vex.upload", name, digest, {"id": vex_id})
        return json_response({"id": vex_id, "scope": "image"}, status=201)

    async def list_docs(request: web.Request) -> web.Response:
        repo = request.query.get("repository")
        if repo is not None:
            if not valid_name(repo):
                raise ApiError(400, "NAME_INVALID", "invalid repository name")
        docs = await run(store.list_vex, repo)
        allowed = await visible(request, list({d["repo_name"] for d in docs}))
        return json_response({"documents": [d for d in docs if d["repo_name"] in allowed]})

    async def delete_doc(request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        if not raw.isdigit():
            raise ApiError(400, "INVALID_INPUT", "id must be an integer")
        row = await run(store.get_vex, int(raw))
        if row is None or not await run(store.delete_vex, int(raw)):
            raise ApiError(404, "NOT_FOUND", "no such VEX document")
        if row["repo_name"]:
            key = f"{row['repo_name']}@{row['digest']}"
            await run(pipeline.jobs.enqueue, "match", key, {"repo": row["repo_name"], "digest": row["digest"]})
        else:
            await run(pipeline.jobs.enqueue, "rematch", f"vex-delete-{raw}", {"vex": int(raw)})
        pipeline.wake()
        await audit(request, "vex.delete", row["repo_name"], row["digest"], {"id": int(raw)})
        return json_response({"deleted": int(raw)})

    return [
        route("POST", "/api/v1/vex", upload_global, role(SECURITY_REVIEWER)),
        route("GET", "/api/v1/vex", list_docs, LOGIN),
        route("DELETE", "/api/v1/vex/{id}", delete_doc, role(SECURITY_REVIEWER)),
        route("POST", image_path, upload_image, role(SECURITY_REVIEWER, repo_action=PULL)),
    ]
