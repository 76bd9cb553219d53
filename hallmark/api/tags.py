"""Tag history and restore (the time machine), and retention settings (``/api/v1``).

- ``GET  /api/v1/repositories/{repo}/tags/{tag}/history``: pull on the repository.
- ``POST /api/v1/repositories/{repo}/tags/{tag}/restore`` ``{"digest": ...}``: push; audited.
- ``GET|PUT /api/v1/repositories/{repo}/retention``: repository admin.
- ``GET|PUT /api/v1/namespaces/{ns}/retention``: administrator.

The retention document carries a scope's own retention policy, default tag expiry and
time-machine window; a PUT changes only the keys it names (``null`` clears one, so it inherits).
These routes must be added before the catch-all ``/api/v1/repositories/{name:.+}`` routes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from hallmark.access.model import ADMIN, PULL, PUSH
from hallmark.api.common import ApiError, json_response, parse_body
from hallmark.api.guards import actor, audit
from hallmark.config import Config
from hallmark.digest import is_digest
from hallmark.lifecycle.durations import parse_duration
from hallmark.lifecycle.retention import PolicyRefused, RetentionPolicy, scope_document, set_settings
from hallmark.lifecycle.tags import history, restore
from hallmark.metadata.history import TagRestoreRefused
from hallmark.registry.names import valid_name, valid_tag
from hallmark.registry.service import RegistryService
from hallmark.web.authz import repo, role, route

NAME = "{name:[a-z0-9][a-z0-9._/-]*}"
TAG_PATH = "/api/v1/repositories/" + NAME + "/tags/{tag:[A-Za-z0-9_][A-Za-z0-9._-]*}"
_REFUSED_STATUS = {"NAME_UNKNOWN": 404, "MANIFEST_UNKNOWN": 404}  # the rest: 409


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    digest: StrictStr


class SettingsRequest(BaseModel):
    """Only the keys present change; ``null`` clears a scope's own value (it inherits again)."""

    model_config = ConfigDict(extra="forbid")
    policy: RetentionPolicy | None = None
    tag_expiry: StrictStr | StrictInt | None = None  # "30d" or seconds; 0: tags never expire here
    time_machine: StrictStr | StrictInt | None = None  # "14d" or seconds; 0: no restore window


def _seconds(field: str, value: str | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        if value < 0:
            raise ApiError(400, "INVALID_INPUT", f"{field} must not be negative")
        return value
    try:
        return 0 if value.strip() in ("0", "0s") else parse_duration(value)
    except ValueError as exc:
        raise ApiError(400, "INVALID_INPUT", f"{field}: {exc}") from exc


def _repo_tag(request: web.Request) -> tuple[str, str]:
    name, tag = request.match_info["name"], request.match_info["tag"]
    if not valid_name(name):
        raise ApiError(400, "NAME_INVALID", f"invalid repository name {name!r}")
    if not valid_tag(tag):
        raise ApiError(400, "TAG_INVALID", f"invalid tag {tag[:200]!r}")
    return name, tag


def _scope_name(request: web.Request, what: str) -> str:
    name = request.match_info["name"]
    if not valid_name(name):
        raise ApiError(400, "NAME_INVALID", f"invalid {what} name {name!r}")
    return name


def routes(config: Config, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run
    meta = registry.meta

    async def get_history(request: web.Request) -> web.Response:
        name, tag = _repo_tag(request)
        if not await run(meta.repo_exists, name):
            raise ApiError(404, "NAME_UNKNOWN", "repository not found")
        doc = await run(history, meta, config, name, tag)
        if doc["current"] is None and not doc["entries"]:
            raise ApiError(404, "TAG_UNKNOWN", f"{name}:{tag} does not exist and has no history")
        return json_response(doc)

    async def post_restore(request: web.Request) -> web.Response:
        name, tag = _repo_tag(request)
        body = await parse_body(request, RestoreRequest)
        if not is_digest(body.digest):
            raise ApiError(400, "DIGEST_INVALID", f"invalid digest {body.digest[:200]!r}")
        who = await actor(request)
        try:
            change = await run(restore, meta, config, name, tag, body.digest, who)
        except TagRestoreRefused as exc:
            raise ApiError(_REFUSED_STATUS.get(exc.code, 409), exc.code, str(exc)) from exc
        if change.changed:
            await audit(request, "tag.restore", name, body.digest, {"tag": tag, "from": change.old})
        return json_response(
            {"repository": name, "tag": tag, "digest": change.new, "previous": change.old, "changed": change.changed}
        )

    async def settings(request: web.Request, kind: str, scope: str) -> web.Response:
        if request.method == "PUT":
            body = await parse_body(request, SettingsRequest)
            values: dict[str, Any] = {}
            if "policy" in body.model_fields_set:
                values["policy"] = body.policy
            for key in ("tag_expiry", "time_machine"):
                if key in body.model_fields_set:
                    values[key] = _seconds(key, getattr(body, key))
            if kind == "repository" and not await run(meta.repo_exists, scope):
                raise ApiError(404, "NAME_UNKNOWN", "repository not found")
            try:
                await run(set_settings, meta, kind, scope, values)
            except PolicyRefused as exc:
                raise ApiError(409, "POLICY_REFUSED", str(exc), exc.detail) from exc
            detail = {k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in values.items()}
            if kind == "repository":
                await audit(request, "repository.retention", scope, None, detail)
            else:
                await audit(request, "namespace.retention", None, None, {"namespace": scope, **detail})
        elif kind == "repository" and not await run(meta.repo_exists, scope):
            raise ApiError(404, "NAME_UNKNOWN", "repository not found")
        return json_response(await run(scope_document, meta, config, kind, scope))

    async def repo_settings(request: web.Request) -> web.Response:
        return await settings(request, "repository", _scope_name(request, "repository"))

    async def namespace_settings(request: web.Request) -> web.Response:
        return await settings(request, "namespace", _scope_name(request, "namespace"))

    repo_path = "/api/v1/repositories/" + NAME + "/retention"
    ns_path = "/api/v1/namespaces/" + NAME + "/retention"
    return [
        route("GET", TAG_PATH + "/history", get_history, repo(PULL)),
        route("POST", TAG_PATH + "/restore", post_restore, repo(PUSH)),
        route("GET", repo_path, repo_settings, repo(ADMIN)),
        route("PUT", repo_path, repo_settings, repo(ADMIN)),
        route("GET", ns_path, namespace_settings, role()),
        route("PUT", ns_path, namespace_settings, role()),
    ]
