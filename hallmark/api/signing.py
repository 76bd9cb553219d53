"""Signature verification and on-demand signing of images (``/api/v1/repositories/{name}/images/{digest}``)."""

from __future__ import annotations

from aiohttp import web

from hallmark.access.model import PULL, SECURITY_REVIEWER
from hallmark.api.common import ApiError, json_response
from hallmark.api.guards import audit
from hallmark.digest import is_digest
from hallmark.pipeline.service import Pipeline
from hallmark.registry.names import valid_name
from hallmark.registry.service import RegistryService
from hallmark.signing.errors import EnvelopeError, PolicyError, SigningError
from hallmark.signing.service import NotFound, sign_image, verify_image
from hallmark.web.authz import repo, role, route

IMAGE_PATH = "/api/v1/repositories/{name:[a-z0-9][a-z0-9._/-]*}/images/{digest:sha(?:256|512):[a-f0-9]+}"


def _image(request: web.Request) -> tuple[str, str]:
    name, digest = request.match_info["name"], request.match_info["digest"]
    if not valid_name(name):
        raise ApiError(400, "NAME_INVALID", f"invalid repository name {name!r}")
    if not is_digest(digest):
        raise ApiError(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
    return name, digest


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run

    async def verification(request: web.Request) -> web.Response:
        """Verify now (signatures change outside the pipeline) and return per-signature results."""
        name, digest = _image(request)
        reports = request.query.get("reports", "0").lower() in ("1", "true", "yes")
        try:
            result = await run(lambda: verify_image(pipeline, name, digest, reports=reports))
        except NotFound as exc:
            raise ApiError(404, "NOT_FOUND", f"no manifest {digest} in {name}") from exc
        except PolicyError as exc:
            raise ApiError(409, "VERIFICATION_NOT_CONFIGURED", str(exc)) from exc
        return json_response(result)

    async def sign(request: web.Request) -> web.Response:
        """Sign with the configured enterprise key; also re-verify when a trust policy is configured."""
        name, digest = _image(request)
        try:
            signature = await run(sign_image, pipeline, name, digest)
        except NotFound as exc:
            raise ApiError(404, "NOT_FOUND", f"no manifest {digest} in {name}") from exc
        except (SigningError, EnvelopeError) as exc:
            raise ApiError(409, "SIGNING_NOT_CONFIGURED", str(exc)) from exc
        await audit(request, "sign", name, digest, {"signature": signature})
        body: dict[str, object] = {"repository": name, "digest": digest, "signature": signature}
        if pipeline.config.signing.trust_policy:
            try:
                body["verification"] = await run(verify_image, pipeline, name, digest)
            except PolicyError as exc:
                body["verification_error"] = str(exc)
        return json_response(body, status=201)

    return [
        route("GET", IMAGE_PATH + "/verification", verification, repo(PULL)),
        route("POST", IMAGE_PATH + "/sign", sign, role(SECURITY_REVIEWER, repo_action=PULL)),
    ]
