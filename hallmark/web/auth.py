"""Authentication and enforcement: the Docker token endpoint, the /v2 guard and the route middleware.

``install(app, hm)`` wires everything when ``access.enabled``. Every HTTP route declares its
need in ``hallmark.web.authz``; ``authorize`` enforces it before the handler. The /v2 routes go
through one dispatcher whose guard maps each registry handler to an action (``registry_action``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import orjson
from aiohttp import web

from hallmark.access.audit import ALLOWED, DENIED
from hallmark.access.model import ANONYMOUS, DELETE, PULL, PUSH, Identity
from hallmark.access.service import AccessService, AuthFailed, Permissions, RateLimited
from hallmark.api.common import ApiError
from hallmark.registry import http as reg
from hallmark.registry.errors import RegistryError
from hallmark.registry.names import split_reference, valid_name
from hallmark.web import client
from hallmark.web.authz import ADMINISTRATOR, PUBLIC, Need, declared, need_of

if TYPE_CHECKING:
    from hallmark.app import Hallmark

log = logging.getLogger(__name__)

ACCESS_KEY = web.AppKey("access", AccessService)
IDENTITY = "hallmark.identity"
PERMISSIONS = "hallmark.permissions"
MAX_AUTH_HEADER = 7168


def client_addr(request: web.Request) -> str | None:
    """The client's address for rate limits and the audit log (through trusted proxies, if set)."""
    return client.client_addr(request, request.app.get(client.TRUSTED_PROXIES))


def _retry_after(exc: RateLimited) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)}


# -- credentials ---------------------------------------------------------------------------------
def basic_credentials(value: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise AuthFailed("malformed Basic credentials") from exc
    user, sep, secret = raw.partition(":")
    if not sep or not user or not secret:
        raise AuthFailed("malformed Basic credentials")
    return user, secret


# The web portal's session: a short-lived personal token in an HttpOnly, SameSite=Strict cookie.
SESSION_COOKIE = "hallmark_session"


CSRF_COOKIE = "hallmark_csrf"
CSRF_CHECKED = "hallmark.csrf_checked"


async def check_csrf(request: web.Request) -> bool:
    """Double-submit check of a portal form (cookie vs. the ``csrf`` field), plus Origin when sent.

    Only a form that passes may act with the session cookie (``session_token``)."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return False
    form = await request.post()  # cached on the request: the handler reads it again
    sent = str(form.get("csrf", ""))
    have = request.cookies.get(CSRF_COOKIE, "")
    ok = bool(sent) and bool(have) and hmac.compare_digest(sent.encode(), have.encode())
    request[CSRF_CHECKED] = ok
    return ok


def session_token(request: web.Request) -> str | None:
    """The portal session cookie, honoured for reads outside /v2 and /auth, and for portal forms that
    passed the CSRF check: a cookie rides along with cross-site requests, so alone it never
    authorizes a change."""
    if request.path.startswith(("/v2", "/auth/")):
        return None
    if request.method not in ("GET", "HEAD") and not request.get(CSRF_CHECKED):
        return None
    value = request.cookies.get(SESSION_COOKIE)
    return value if value and value.startswith("hmk_") and len(value) <= 256 else None


async def identify(access: AccessService, request: web.Request, allow_basic: bool = True) -> Identity:
    """The caller from the Authorization header (else the portal session cookie on reads); anonymous
    without either. Raises AuthFailed/RateLimited."""
    header = request.headers.get("Authorization")
    if header is None:
        cookie = session_token(request)
        if cookie is None:
            return ANONYMOUS
        return await asyncio.get_running_loop().run_in_executor(
            None, access.authenticate_token, cookie, client_addr(request)
        )
    if len(header) > MAX_AUTH_HEADER:
        raise AuthFailed("Authorization header too large")
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    loop = asyncio.get_running_loop()
    if scheme == "bearer" and value:
        if value.startswith("hmk_"):
            return await loop.run_in_executor(None, access.authenticate_token, value, client_addr(request))
        if access.store.dialect == "sqlite":
            return access.verify_jwt(value)  # ~0.1 ms of ECDSA and one local read: cheaper than a thread hop
        return await loop.run_in_executor(None, access.verify_jwt, value)
    if scheme == "basic" and value and allow_basic:
        user, secret = basic_credentials(value)
        # argon2 is deliberately slow: never on the event loop.
        return await loop.run_in_executor(None, access.authenticate, user, secret, client_addr(request), False)
    raise AuthFailed("unsupported Authorization scheme")


def _realm(access: AccessService, request: web.Request) -> str:
    if access.cfg.realm:
        return access.cfg.realm
    base = access.config.server.public_url or f"{request.scheme}://{request.host}"
    return base.rstrip("/") + "/auth/token"


def _challenge(access: AccessService, request: web.Request, scope: str | None, error: str | None = None) -> str:
    parts = [f'realm="{_realm(access, request)}"', f'service="{access.cfg.service}"']
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return "Bearer " + ",".join(parts)


# -- token endpoint --------------------------------------------------------------------------------
def parse_scopes(values: list[str]) -> list[tuple[str, str, set[str]]]:
    out = []
    for value in values:
        for item in value.split():
            rtype, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if not rtype or not name:
                continue
            if rtype == "repository" and not valid_name(name):
                continue
            out.append((rtype, name, {a for a in actions.split(",") if a}))
    return out[:64]


def _token_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    err = RegistryError(code, message=message, status=status, headers=headers)
    return reg.error_response(err)


async def token_endpoint(request: web.Request) -> web.Response:
    access = request.app[ACCESS_KEY]
    addr = client_addr(request)
    scopes = request.query.getall("scope", [])
    service = request.query.get("service")
    if request.method == "POST":
        form = await request.post()
        scopes = [str(v) for v in form.getall("scope", [])] or scopes
        service = str(form.get("service") or service or "") or None
        if form.get("grant_type") == "password":
            user, secret = str(form.get("username", "")), str(form.get("password", ""))
            ident: Identity | None = None
            try:
                ident = await asyncio.get_running_loop().run_in_executor(
                    None, access.authenticate, user, secret, addr, True
                )
            except RateLimited as exc:
                return _token_error(429, "TOOMANYREQUESTS", str(exc), _retry_after(exc))
            except AuthFailed:
                return _token_error(401, "UNAUTHORIZED", "invalid credentials")
            return _issue(access, ident, scopes, addr)
        if form.get("grant_type") not in (None, ""):
            return _token_error(400, "UNSUPPORTED", "unsupported grant_type")
    if service is not None and service != access.cfg.service:
        return _token_error(400, "DENIED", f"unknown service {service[:100]!r}")
    try:
        header = request.headers.get("Authorization")
        if header is not None and header.strip().lower().startswith("basic"):
            value = header.strip()[5:].strip()
            user, secret = basic_credentials(value)
            ident = await asyncio.get_running_loop().run_in_executor(
                None, access.authenticate, user, secret, addr, True
            )
        else:
            ident = await identify(access, request)
    except RateLimited as exc:
        return _token_error(429, "TOOMANYREQUESTS", str(exc), _retry_after(exc))
    except AuthFailed:
        return _token_error(401, "UNAUTHORIZED", "invalid credentials", {"WWW-Authenticate": 'Basic realm="hallmark"'})
    return _issue(access, ident, scopes, addr)


def _issue(access: AccessService, ident: Identity, scopes: list[str], addr: str | None) -> web.Response:
    if ident.jwt_access is not None:
        # A JWT never mints another JWT: that would let a narrow token widen itself.
        return _token_error(401, "UNAUTHORIZED", "use credentials, not a registry token")
    requested = parse_scopes(scopes)
    granted = access.grant_scopes(ident, requested)
    token, issued, lifetime = access.issue_jwt(ident, granted)
    if not ident.anonymous:
        access.audit.record(
            ident.name,
            "token.issue",
            client_addr=addr,
            detail={"requested": [f"{t}:{n}:{','.join(sorted(a))}" for t, n, a in requested], "granted": granted},
        )
    issued_at = dt.datetime.fromtimestamp(issued, dt.UTC).isoformat().replace("+00:00", "Z")
    body = {"token": token, "access_token": token, "expires_in": lifetime, "issued_at": issued_at}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


# -- /v2 guard -------------------------------------------------------------------------------------------
_PUSH_HANDLERS = {reg.upload_start, reg.upload}


def registry_action(handler: Any, method: str) -> str | None:
    """The registry's route table: the repository action a /v2 request needs (None: base or catalog)."""
    if handler in (reg.base, reg.catalog):
        return None
    if method in ("GET", "HEAD") and handler not in _PUSH_HANDLERS:
        return PULL
    if method == "DELETE" and handler in (reg.manifest, reg.blob):
        return DELETE
    return PUSH


# The challenge asks for pull,push even for reads: clients that keep one token per session (oras-py)
# can then push after their first read. The token endpoint still grants only what is permitted.
_SCOPE_ACTIONS = {PULL: "pull,push", PUSH: "pull,push", DELETE: "delete"}


class RegistryGuard:
    def __init__(self, access: AccessService) -> None:
        self.access = access

    async def __call__(
        self,
        request: web.Request,
        handler: Callable[..., Awaitable[web.StreamResponse]],
        svc: Any,
        params: dict[str, str],
    ) -> web.StreamResponse:
        access = self.access
        repo = params.get("name")
        action = registry_action(handler, request.method)
        scope = f"repository:{repo}:{_SCOPE_ACTIONS[action]}" if repo and action else None
        if handler is reg.catalog:
            scope = "registry:catalog:*"
        addr = client_addr(request)
        try:
            ident = await identify(access, request, access.cfg.basic_on_registry)
        except RateLimited as exc:
            raise RegistryError("TOOMANYREQUESTS", message=str(exc), headers=_retry_after(exc)) from exc
        except AuthFailed as exc:
            raise RegistryError(
                "UNAUTHORIZED",
                message="authentication failed",
                headers={"WWW-Authenticate": _challenge(access, request, scope, "invalid_token")},
            ) from exc
        request[IDENTITY] = ident
        if ident.anonymous and (action is None or action != PULL):
            # Base, catalog, push and delete always need an identity: the challenge starts the token flow.
            raise RegistryError("UNAUTHORIZED", headers={"WWW-Authenticate": _challenge(access, request, scope)})
        if handler is reg.base:
            return await handler(request, svc, params)
        if handler is reg.catalog:
            if ident.jwt_access is not None and ("registry", "catalog") not in ident.jwt_access:
                raise RegistryError(
                    "UNAUTHORIZED",
                    headers={"WWW-Authenticate": _challenge(access, request, scope, "insufficient_scope")},
                )
            # The listing reflects what the caller may read now, not the repositories named in a token.
            return await self._catalog(request, svc, await self._permissions(access.underlying(ident)))
        perms = await self._permissions(ident)
        assert repo is not None and action is not None
        if not perms.can(repo, action):
            await self._deny(ident, request, repo, action, params, addr)
            if ident.anonymous or ident.jwt_access is not None:
                error = "insufficient_scope" if ident.jwt_access is not None else None
                raise RegistryError(
                    "UNAUTHORIZED",
                    headers={"WWW-Authenticate": _challenge(access, request, scope, error)},
                    detail=[{"Type": "repository", "Name": repo, "Action": action}],
                )
            raise RegistryError("DENIED", detail=[{"Type": "repository", "Name": repo, "Action": action}])
        if handler is reg.upload_start and "mount" in request.query:
            source = request.query.get("from", "")
            # Mounting needs pull on the source; otherwise the client gets a normal upload session.
            request[reg.MOUNT_ALLOWED] = bool(source) and valid_name(source) and perms.can(source, PULL)
        try:
            resp = await handler(request, svc, params)
        except RegistryError as exc:
            if handler is reg.manifest and request.method == "GET" and exc.code == "DENIED":
                # A pull refused by the catalog (a retired image): who still tries matters to its owners.
                digest = (exc.detail or {}).get("digest") if isinstance(exc.detail, dict) else None
                await self.access.audit.record_durable(
                    ident.name, "pull", repo, digest, DENIED, addr, {"reason": exc.message[:300]}
                )
            raise
        await self._audit_success(ident, request, handler, repo, params, resp, addr)
        return resp

    async def _permissions(self, ident: Identity) -> Permissions:
        access = self.access
        if access.store.dialect == "sqlite":
            return access.permissions(ident)
        return await asyncio.get_running_loop().run_in_executor(None, access.permissions, ident)

    async def _catalog(self, request: web.Request, svc: Any, perms: Permissions) -> web.Response:
        """Only repositories the caller can pull from, paging over the full list as needed."""
        page = svc.page_size(request.query.get("n"))
        last = request.query.get("last")
        names: list[str] = []
        more = False
        while len(names) <= page:
            batch, batch_more = await svc.catalog(str(max(page, 100)), last)
            if not batch:
                break
            names += [n for n in batch if perms.can(n, PULL)]
            last = batch[-1]
            if not batch_more:
                break
        if len(names) > page:
            names, more = names[:page], True
        headers = {}
        if more and names:
            headers["Link"] = reg.next_link("/v2/_catalog", {"n": str(len(names)), "last": names[-1]})
        return reg.oci_json({"repositories": names}, headers=headers)

    async def _deny(
        self, ident: Identity, request: web.Request, repo: str, action: str, params: dict[str, str], addr: str | None
    ) -> None:
        # Anonymous blob and tag reads are part of every token handshake; record only what matters.
        if ident.anonymous and action == PULL and "ref" not in params:
            return
        await self.access.audit.record_durable(
            ident.name,
            {PULL: "pull", PUSH: "push", DELETE: "delete"}[action],
            repo=repo,
            digest=params.get("digest") or (params.get("ref") if ":" in params.get("ref", "") else None),
            result=DENIED,
            client_addr=addr,
            detail={"method": request.method, "path": request.path[:300]},
        )

    async def _audit_success(
        self,
        ident: Identity,
        request: web.Request,
        handler: Any,
        repo: str,
        params: dict[str, str],
        resp: web.StreamResponse,
        addr: str | None,
    ) -> None:
        # Security-relevant entries are durable before the response goes out (pulls only queue).
        record = self.access.audit.record_durable
        method = request.method
        if handler is reg.manifest:
            ref = params["ref"]
            digest = resp.headers.get("Docker-Content-Digest") or (ref if ":" in ref else None)
            tag = None if ":" in ref else ref
            detail = {"tag": tag} if tag else None
            if method == "GET":
                await record(ident.name, "pull", repo, digest, ALLOWED, addr, detail)
            elif method == "PUT":
                await record(ident.name, "push", repo, digest, ALLOWED, addr, detail)
            elif method == "DELETE":
                await record(ident.name, "delete" if tag is None else "untag", repo, digest, ALLOWED, addr, detail)
        elif handler is reg.blob and method == "DELETE":
            await record(ident.name, "blob.delete", repo, params.get("digest"), ALLOWED, addr)
        elif handler is reg.upload_start and resp.status == 201 and "mount" in request.query:
            detail = {"from": request.query.get("from", "")[:255]}
            await record(ident.name, "blob.mount", repo, request.query.get("mount"), ALLOWED, addr, detail)


# -- API authentication ------------------------------------------------------------------------------------
async def api_identity(request: web.Request) -> Identity:
    """The API caller (cached on the request); 401/429 as JSON on bad credentials."""
    if IDENTITY in request:
        ident: Identity = request[IDENTITY]
        return ident
    access = request.app[ACCESS_KEY]
    try:
        ident = await identify(access, request)
    except RateLimited as exc:
        err = ApiError(429, "TOOMANYREQUESTS", str(exc))
        err.headers.update(_retry_after(exc))
        raise err from exc
    except AuthFailed as exc:
        raise ApiError(401, "UNAUTHORIZED", "authentication failed") from exc
    request[IDENTITY] = ident
    return ident


async def api_permissions(request: web.Request) -> Permissions:
    if PERMISSIONS not in request:
        ident = await api_identity(request)
        access = request.app[ACCESS_KEY]
        request[PERMISSIONS] = await asyncio.get_running_loop().run_in_executor(None, access.permissions, ident)
    perms: Permissions = request[PERMISSIONS]
    return perms


class Refused(Exception):
    """A declaration not met: 401 (no or bad credentials) or 403 (not allowed)."""

    def __init__(self, status: int, message: str, clear_session: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.clear_session = clear_session


DENIAL_PAGE: web.AppKey[Callable[[web.Request, int, str], Awaitable[web.StreamResponse]]] = web.AppKey("denial_page")


async def check(request: web.Request, need: Need) -> None:
    """Raise Refused unless the caller meets ``need`` (identity and permissions cached on the request)."""
    try:
        ident = await api_identity(request)
    except ApiError as exc:
        if exc.status_code != 401 and need.style != "portal":
            raise  # 429: too many failed attempts
        raise Refused(401, "authentication failed", clear_session=True) from exc
    if need.login and ident.anonymous:
        raise Refused(401, "authentication required")
    if not need.roles and need.repo is None:
        return
    perms = await api_permissions(request)
    if need.roles and not any(perms.has_role(r) for r in (*need.roles, ADMINISTRATOR)):
        raise Refused(401 if ident.anonymous else 403, "requested access to the resource is denied")
    if need.repo is not None:
        name = (
            await body_repository(request, need.repo_body)
            if need.repo_body
            else request.match_info.get(need.repo_param, "")
        )
        if not valid_name(name):
            raise ApiError(400, "NAME_INVALID", "invalid repository name")
        if not perms.can(name, need.repo):
            raise Refused(401 if ident.anonymous else 403, "requested access to the resource is denied")


async def body_repository(request: web.Request, body_fields: tuple[str, ...]) -> str:
    """The repository of the image reference in the first of ``body_fields`` the JSON body gives
    (the body stays readable by the handler)."""
    try:
        doc = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_INPUT", "request body is not JSON") from exc
    given = [doc.get(f) for f in body_fields if doc.get(f)] if isinstance(doc, dict) else []
    ref = given[0] if given else None
    if not isinstance(ref, str) or not ref:
        names = " or ".join(repr(f) for f in body_fields)
        raise ApiError(
            400, "INVALID_INPUT", f"request body needs {names}: an image reference repository@digest or repository:tag"
        )
    return split_reference(ref)[0]


@web.middleware
async def authorize(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """Enforce the route's declaration before its handler; default-deny for undeclared routes."""
    route = request.match_info.route
    if request.match_info.http_exception is not None:
        return await handler(request)  # 404/405 from the router: nothing to protect
    need = need_of(request.method, route.handler)
    if need is None:
        log.error("route without an authorization declaration: %s %s", request.method, request.path)
        raise ApiError(403, "DENIED", "requested access to the resource is denied")
    if need.public or need.registry:
        return await handler(request)  # the registry guard enforces /v2 per registry route
    if need.style == "portal" and request.method == "POST" and not need.public:
        if not await check_csrf(request):
            msg = "The form expired or was not sent by this portal (CSRF check failed). Reload and retry."
            return await _portal_refusal(request, Refused(403, msg), page_status=403)
    try:
        await check(request, need)
    except Refused as exc:
        if need.style == "portal":
            return await _portal_refusal(request, exc)
        if exc.status == 401:
            raise ApiError(401, "UNAUTHORIZED", str(exc)) from exc
        raise ApiError(403, "DENIED", str(exc)) from exc
    return await handler(request)


async def _portal_refusal(request: web.Request, exc: Refused, page_status: int = 404) -> web.StreamResponse:
    """Browsers go to the login page; a signed-in viewer sees the same page as for a missing repository."""
    if exc.status == 401:
        back = request.path_qs if request.method in ("GET", "HEAD") else "/"
        resp = web.Response(status=303, headers={"Location": "/login?next=" + quote(back, safe="")})
        if exc.clear_session:
            resp.del_cookie(SESSION_COOKIE, path="/")
        return resp
    page = request.app.get(DENIAL_PAGE)
    if page is not None:
        message = str(exc) if page_status != 404 else "No such repository, or you may not read it."
        return await page(request, page_status, message)
    return web.Response(status=page_status, text="refused")


def readable(request: web.Request, names: list[str]) -> list[str]:
    """Filter repository names to those the API caller can pull (everything when access is off)."""
    perms: Permissions | None = request.get(PERMISSIONS)
    if perms is None:
        return names
    return [n for n in names if perms.can(n, PULL)]


# -- wiring -------------------------------------------------------------------------------------------------
def install(app: web.Application, hm: Hallmark) -> None:
    """Enable authentication, authorization and auditing on the app (no-op when access is disabled)."""
    if not hm.config.access.enabled:
        return
    if hm.access is None:
        hm.access = AccessService.for_metadata(hm.config, hm.meta)
    access = hm.access
    access.signer  # noqa: B018 - create or load the signing key now, not on the first login
    password = access.bootstrap()
    if password is not None:
        path = hm.config.data_path / "initial-admin-password"
        # Printed once on the console (not through logging) and kept 0600 in the data folder.
        print(f"Created user 'admin' with password: {password}\n(also written to {path}; change it)", flush=True)
    app[ACCESS_KEY] = access
    app[reg.GUARD_KEY] = RegistryGuard(access)
    app.middlewares.append(authorize)
    token_routes = [web.get("/auth/token", token_endpoint), web.post("/auth/token", token_endpoint)]
    app.router.add_routes(declared(token_routes, PUBLIC))
    if hm.config.access.oidc.issuer:
        from hallmark.access import oidc

        app.router.add_routes(declared(oidc.routes(access, hm.config), PUBLIC))

    async def background(app: web.Application) -> AsyncIterator[None]:
        flusher = asyncio.create_task(access.audit.run())
        pruner = asyncio.create_task(_prune_loop(access))
        yield
        for task in (flusher, pruner):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(background)


async def _prune_loop(access: AccessService) -> None:
    days = access.cfg.audit_retention_days
    if days <= 0:
        return
    loop = asyncio.get_running_loop()
    while True:
        try:
            n = await loop.run_in_executor(None, access.audit.prune, days)
            if n:
                log.info("pruned %d audit entries older than %d days", n, days)
        except Exception:
            log.exception("audit pruning failed")
        await asyncio.sleep(3600)
