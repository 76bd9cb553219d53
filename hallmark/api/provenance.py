"""Provenance of images: CI metadata posted by a pipeline step, and every source's claims read back.

``POST /api/v1/provenance`` names its image in the body (``image``: ``repository@digest`` or
``repository:tag``); push on that repository is declared with ``repo_in_body`` and checked by
the authorization middleware before this handler runs, like any path-named repository.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hallmark.access.model import PULL, PUSH
from hallmark.api.common import IMAGE_PATH, ApiError, image_ref, json_response, parse_body
from hallmark.api.guards import actor, audit, visible
from hallmark.digest import is_digest
from hallmark.pipeline.service import Pipeline
from hallmark.provenance.facts import FactError, from_ci
from hallmark.provenance.store import merge, provenance_for, record
from hallmark.registry.names import split_reference, valid_name, valid_tag
from hallmark.registry.service import RegistryService
from hallmark.web.authz import repo, repo_in_body, route


class CiProvenance(BaseModel):
    """What a CI step knows about the build that produced ``image``."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(max_length=600)
    source_repo: str | None = Field(default=None, max_length=2048)
    revision: str | None = Field(default=None, max_length=128)
    pipeline: str | None = Field(default=None, max_length=255)
    run_id: str | None = Field(default=None, max_length=128)
    run_url: str | None = Field(default=None, max_length=2048)
    builder_id: str | None = Field(default=None, max_length=2048)
    actor: str | None = Field(default=None, max_length=255)
    ref: str | None = Field(default=None, max_length=255)
    ci: str | None = Field(default=None, max_length=64)


def _resolve(registry: RegistryService, ref: str) -> tuple[str, str]:
    """(repository, digest) of ``repository@digest`` or ``repository:tag``; 400/404 with the reason."""
    name, tag, digest = split_reference(ref)
    if not valid_name(name):
        raise ApiError(400, "NAME_INVALID", f"invalid repository name {name!r}")
    if digest is not None:
        if not is_digest(digest):
            raise ApiError(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
        if registry.meta.get_manifest(name, digest, True) is None:
            raise ApiError(404, "MANIFEST_UNKNOWN", f"no manifest {digest} in {name}")
        return name, digest
    if tag is None or not valid_tag(tag):
        raise ApiError(400, "INVALID_INPUT", f"image {ref!r} needs a digest (@sha256:...) or a valid tag (:tag)")
    rec = registry.meta.get_manifest(name, tag, False)
    if rec is None:
        raise ApiError(404, "MANIFEST_UNKNOWN", f"no tag {tag} in {name}")
    return name, rec.digest


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run
    meta = registry.meta

    async def attach(request: web.Request) -> web.Response:
        """Record CI metadata for an image; the same principal posting again replaces its row."""
        body = await parse_body(request, CiProvenance)
        name, digest = await run(_resolve, registry, body.image)
        who = await actor(request)
        values: dict[str, Any] = body.model_dump(exclude={"image"}, exclude_none=True)
        try:
            src = from_ci(values, digest, f"api:{who}"[:255])
        except FactError as exc:
            raise ApiError(400, "INVALID_INPUT", str(exc)) from exc
        await run(record, meta, name, [src])
        detail = {k: v for k, v in values.items() if k in ("source_repo", "revision", "pipeline", "run_id", "run_url")}
        await audit(request, "provenance.attach", name, digest, {"reference": body.image, **detail})
        rows = await run(provenance_for, meta, digest, False)
        mine = next(r for r in rows if r["kind"] == src.kind and r["origin"] == src.origin)
        return json_response({"repository": name, "digest": digest, "provenance": mine}, status=201)

    async def read(request: web.Request) -> web.Response:
        """Every source's claims, best first, with the merged answer; rows seen only in repositories
        the caller may not pull are left out."""
        name, digest = image_ref(request)
        if await run(meta.get_manifest, name, digest, True) is None:
            raise ApiError(404, "NOT_FOUND", f"no manifest {digest} in {name}")
        rows = await run(provenance_for, meta, digest)
        allowed = await visible(request, list({r["repository"] for r in rows}))
        rows = [r for r in rows if r["repository"] in allowed or r["repository"] == name]
        return json_response({"repository": name, "digest": digest, "summary": merge(rows), "provenance": rows})

    return [
        route("POST", "/api/v1/provenance", attach, repo_in_body(PUSH, "image")),
        route("GET", IMAGE_PATH + "/provenance", read, repo(PULL)),
    ]
