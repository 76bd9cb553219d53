"""Signature verification and on-demand signing of images (``/api/v1/repositories/{name}/images/{digest}``)."""

from __future__ import annotations

from aiohttp import web

from hallmark.access.model import PULL, SECURITY_REVIEWER
from hallmark.api.common import IMAGE_PATH, ApiError, image_ref, json_response
from hallmark.api.guards import audit
from hallmark.pipeline.service import Pipeline
from hallmark.registry.service import RegistryService
from hallmark.signing.errors import EnvelopeError, PolicyError, SigningError
from hallmark.signing.service import NotFound, sign_image, verify_image
from hallmark.web.authz import repo, role, route


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run

    async def verification(request: web.Request) -> web.Response:
        """Verify now (signatures change outside the pipeline) and return per-signature results."""
        name, digest = image_ref(request)
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
        name, digest = image_ref(request)
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
