"""Access-control API: users, teams, robots, tokens, permissions, namespaces, visibility, audit.

Administration needs the catalog ``administrator`` role; the audit log also opens to
``auditor``. Secrets (new passwords, tokens) appear only in the response that creates them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from hallmark.access.model import ADMIN, AUDITOR
from hallmark.access.service import AccessService, Conflict, NotFound
from hallmark.api.common import ApiError, json_response, parse_body
from hallmark.registry.names import valid_name
from hallmark.web.auth import api_identity, api_permissions, client_addr
from hallmark.web.authz import LOGIN, repo, role, route

T = TypeVar("T")
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(_In):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    roles: list[Literal["security_reviewer", "auditor", "administrator"]] = []


class UserPatch(_In):
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    disabled: StrictBool | None = None


class TeamIn(_In):
    name: str = Field(min_length=1, max_length=64)


class RobotIn(_In):
    name: str = Field(min_length=1, max_length=64)
    scopes: list[str] = Field(min_length=1, max_length=64)
    expires_in_days: float | None = Field(default=90, gt=0, le=3650)


class TokenIn(_In):
    name: str = Field(default="token", min_length=1, max_length=128)
    owner: str | None = None
    scopes: list[str] | None = Field(default=None, max_length=64)
    expires_in_days: float | None = Field(default=30, gt=0, le=3650)


class GrantIn(_In):
    subject: str = Field(min_length=1, max_length=128)
    subject_kind: Literal["user", "robot", "team"] = "user"
    scope_kind: Literal["namespace", "repository", "catalog"]
    scope: str = Field(default="", max_length=255)
    role: str = Field(min_length=1, max_length=32)


class NamespaceIn(_In):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=1000)


class VisibilityIn(_In):
    public: StrictBool


def _since(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, "INVALID_INPUT", f"{name} must be an ISO 8601 time") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def routes(access: AccessService) -> list[web.RouteDef]:
    async def run(fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except Conflict as exc:
            raise ApiError(409, "CONFLICT", f"{exc} already exists") from exc
        except NotFound as exc:
            raise ApiError(404, "NOT_FOUND", f"{exc} not found") from exc
        except ValueError as exc:
            raise ApiError(400, "INVALID_INPUT", str(exc)) from exc

    async def admin(request: web.Request) -> tuple[str, str | None]:
        """The acting administrator (the route's declaration already checked the role)."""
        return (await api_identity(request)).name, client_addr(request)

    # -- me ----------------------------------------------------------------------------------
    async def me(request: web.Request) -> web.Response:
        ident = await api_identity(request)
        perms = await api_permissions(request)
        teams = await run(access.store.teams_of, ident.principal_id) if ident.principal_id else []
        return json_response(
            {
                "name": ident.name,
                "kind": ident.kind,
                "teams": teams,
                "catalog_roles": sorted(perms.catalog_roles),
                "permissions": [{"scope_kind": k, "scope": s, "actions": sorted(a)} for k, s, a in perms.rules],
                "token_scopes": [str(s) for s in ident.token_scopes] if ident.token_scopes is not None else None,
            }
        )

    # -- users ----------------------------------------------------------------------------------
    async def list_users(request: web.Request) -> web.Response:
        await admin(request)
        users = await run(access.store.list_principals, "user")
        return json_response({"users": [{"name": u.name, "disabled": u.disabled} for u in users]})

    async def add_user(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        body = await parse_body(request, UserIn)
        await run(access.add_user, actor, body.name, body.password, body.roles, addr)
        return json_response({"name": body.name}, status=201)

    async def patch_user(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        name = request.match_info["name"]
        body = await parse_body(request, UserPatch)
        if body.password is not None:
            await run(access.set_password, actor, name, body.password, addr)
        if body.disabled is not None:
            await run(access.set_disabled, actor, name, body.disabled, addr)
        return json_response({"name": name})

    async def delete_user(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        name = request.match_info["name"]
        if name == actor:
            raise ApiError(400, "INVALID_INPUT", "you cannot delete yourself")
        await run(access.delete_principal, actor, name, addr)
        return web.Response(status=204)

    # -- teams ------------------------------------------------------------------------------------
    async def list_teams(request: web.Request) -> web.Response:
        await admin(request)
        return json_response({"teams": await run(access.store.list_teams)})

    async def add_team(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        body = await parse_body(request, TeamIn)
        await run(access.create_team, actor, body.name, addr)
        return json_response({"name": body.name}, status=201)

    async def delete_team(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        await run(access.delete_team, actor, request.match_info["name"], addr)
        return web.Response(status=204)

    async def team_member(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        team, member = request.match_info["name"], request.match_info["member"]
        await run(access.set_membership, actor, team, member, request.method == "PUT", addr)
        return web.Response(status=204)

    # -- robots and tokens ------------------------------------------------------------------------------
    async def list_robots(request: web.Request) -> web.Response:
        await admin(request)
        robots = await run(access.store.list_principals, "robot")
        return json_response({"robots": [{"name": r.name, "disabled": r.disabled} for r in robots]})

    async def add_robot(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        body = await parse_body(request, RobotIn)
        tid, token = await run(access.create_robot, actor, body.name, body.scopes, body.expires_in_days, addr)
        return json_response({"name": body.name, "token_id": tid, "token": token}, status=201)

    async def delete_robot(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        n = await run(access.revoke_robot, actor, request.match_info["name"], addr)
        return json_response({"revoked_tokens": n})

    def _token_doc(t: Any) -> dict[str, Any]:
        return {
            "id": t.id,
            "owner": t.principal.name,
            "name": t.name,
            "scopes": orjson.loads(t.scopes) if t.scopes else None,
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "revoked_at": t.revoked_at,
        }

    async def list_tokens(request: web.Request) -> web.Response:
        ident = await api_identity(request)
        perms = await api_permissions(request)
        owner = request.query.get("owner")
        if not perms.has_role("administrator"):
            owner = ident.name
        rows = await run(access.store.list_tokens, owner)
        return json_response({"tokens": [_token_doc(t) for t in rows]})

    async def add_token(request: web.Request) -> web.Response:
        ident = await api_identity(request)
        perms = await api_permissions(request)
        body = await parse_body(request, TokenIn)
        owner = body.owner or ident.name
        if owner != ident.name and not perms.has_role("administrator"):
            raise ApiError(403, "DENIED", "only administrators create tokens for others")
        if ident.restricted:
            # A scoped token or registry JWT must not mint a token wider than itself.
            raise ApiError(403, "DENIED", "log in with a password or an unscoped token to create tokens")
        tid, token = await run(
            access.create_token, ident.name, owner, body.name, body.scopes, body.expires_in_days, client_addr(request)
        )
        return json_response({"id": tid, "token": token}, status=201)

    async def revoke_token(request: web.Request) -> web.Response:
        ident = await api_identity(request)
        perms = await api_permissions(request)
        tid = request.match_info["id"]
        row = await run(access.store.token, tid)
        if row is None or (row.principal.name != ident.name and not perms.has_role("administrator")):
            raise ApiError(404, "NOT_FOUND", "token not found")
        await run(access.revoke_token, ident.name, tid, client_addr(request))
        return web.Response(status=204)

    # -- permissions and namespaces ---------------------------------------------------------------------
    async def list_grants(request: web.Request) -> web.Response:
        await admin(request)
        grants = await run(access.store.list_grants)
        return json_response({"permissions": [g.__dict__ for g in grants]})

    async def change_grant(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        body = await parse_body(request, GrantIn)
        if body.scope_kind == "repository" and not valid_name(body.scope):
            raise ApiError(400, "INVALID_INPUT", "invalid repository name")
        kind = "team" if body.subject_kind == "team" else "principal"
        args = (actor, kind, body.subject, body.scope_kind, body.scope, body.role, addr)
        if request.method == "DELETE":
            if not await run(access.revoke, *args):
                raise ApiError(404, "NOT_FOUND", "no such permission")
            return web.Response(status=204)
        created = await run(access.grant, *args)
        return json_response({"created": created}, status=201 if created else 200)

    async def list_namespaces(request: web.Request) -> web.Response:
        return json_response({"namespaces": await run(access.store.list_namespaces)})

    async def add_namespace(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        body = await parse_body(request, NamespaceIn)
        await run(access.create_namespace, actor, body.name, body.description, addr)
        return json_response({"name": body.name}, status=201)

    async def delete_namespace(request: web.Request) -> web.Response:
        actor, addr = await admin(request)
        await run(access.delete_namespace, actor, request.match_info["name"], addr)
        return web.Response(status=204)

    async def set_visibility(request: web.Request) -> web.Response:
        repo = request.match_info["name"]
        if not valid_name(repo):
            raise ApiError(400, "NAME_INVALID", "invalid repository name")
        ident = await api_identity(request)
        body = await parse_body(request, VisibilityIn)
        await run(access.set_public, ident.name, repo, body.public, client_addr(request))
        return json_response({"name": repo, "public": body.public})

    # -- audit ---------------------------------------------------------------------------------------------
    async def audit_query(request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = min(int(q.get("limit", "1000")), 10_000)
            after = int(q["after"]) if "after" in q else None
        except ValueError as exc:
            raise ApiError(400, "INVALID_INPUT", "limit and after must be integers") from exc
        await run(access.audit.flush)
        rows = await run(
            lambda: access.audit.query(
                actor=q.get("actor") or None,
                action=q.get("action") or None,
                repo=q.get("repo") or None,
                since=_since(q.get("since"), "since"),
                until=_since(q.get("until"), "until"),
                after_seq=after,
                limit=limit,
            )
        )
        return json_response({"entries": rows})

    async def audit_export(request: web.Request) -> web.StreamResponse:
        await run(access.audit.flush)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        lines = await run(lambda: list(access.audit.export()))
        for i in range(0, len(lines), 1000):
            await resp.write(b"".join(lines[i : i + 1000]))
        await resp.write_eof()
        return resp

    async def audit_verify(request: web.Request) -> web.Response:
        await run(access.audit.flush)
        res = await run(access.audit.verify)
        return json_response(res.__dict__)

    return [
        route("GET", "/api/v1/me", me, LOGIN),
        route("GET", "/api/v1/users", list_users, role()),
        route("POST", "/api/v1/users", add_user, role()),
        route("PATCH", "/api/v1/users/{name}", patch_user, role()),
        route("DELETE", "/api/v1/users/{name}", delete_user, role()),
        route("GET", "/api/v1/teams", list_teams, role()),
        route("POST", "/api/v1/teams", add_team, role()),
        route("DELETE", "/api/v1/teams/{name}", delete_team, role()),
        route("PUT", "/api/v1/teams/{name}/members/{member}", team_member, role()),
        route("DELETE", "/api/v1/teams/{name}/members/{member}", team_member, role()),
        route("GET", "/api/v1/robots", list_robots, role()),
        route("POST", "/api/v1/robots", add_robot, role()),
        route("DELETE", "/api/v1/robots/{name}", delete_robot, role()),
        route("GET", "/api/v1/tokens", list_tokens, LOGIN),
        route("POST", "/api/v1/tokens", add_token, LOGIN),
        route("DELETE", "/api/v1/tokens/{id}", revoke_token, LOGIN),
        route("GET", "/api/v1/permissions", list_grants, role()),
        route("POST", "/api/v1/permissions", change_grant, role()),
        route("DELETE", "/api/v1/permissions", change_grant, role()),
        route("GET", "/api/v1/namespaces", list_namespaces, LOGIN),
        route("POST", "/api/v1/namespaces", add_namespace, role()),
        route("DELETE", "/api/v1/namespaces/{name}", delete_namespace, role()),
        route("PUT", "/api/v1/access/visibility/{name:.+}", set_visibility, repo(ADMIN)),
        route("GET", "/api/v1/audit", audit_query, role(AUDITOR)),
        route("GET", "/api/v1/audit/export", audit_export, role(AUDITOR)),
        route("GET", "/api/v1/audit/verify", audit_verify, role(AUDITOR)),
    ]
