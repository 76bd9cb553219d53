"""What every portal page goes through: the session (login, logout, who is looking), the CSRF
check of POST forms, and rendering with the security headers.

Apart from the page handlers in :mod:`hallmark.portal.routes` so that pages, actions and admin
screens share one implementation of these rules. A password login creates a short-lived personal
token (``AccessService.create_token``) kept in an HttpOnly, SameSite=Strict cookie;
``web.auth.identify`` honours it for GETs only, so the download links (``/api/v1/.../reports/...``)
work in the browser while no state change can ride on the cookie. The portal's own POST forms
carry a double-submit CSRF token.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from hallmark import __version__
from hallmark.access import crypto
from hallmark.access.model import AUDITOR, PULL, safe_next
from hallmark.access.service import AccessService, AuthFailed, Permissions, RateLimited
from hallmark.api.common import ApiError
from hallmark.pipeline.findings import KIND_LABELS
from hallmark.pipeline.findings import SEVERITIES as FINDING_SEVERITIES
from hallmark.portal import actions
from hallmark.web.auth import ACCESS_KEY, CSRF_COOKIE, SESSION_COOKIE, api_permissions, client_addr

if TYPE_CHECKING:
    from hallmark.app import Hallmark

TEMPLATES = Path(__file__).resolve().parent / "templates"
SESSION_HOURS = 8
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Bounce(Exception):
    """Send the browser to the login page (no or expired session)."""

    def __init__(self, clear: bool = False) -> None:
        self.clear = clear


class PortalFailure(Exception):
    """Render the error page with this status (not found, forbidden, bad form)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Viewer:
    """Who looks at the page; ``perms`` is None when access control is off (everything visible)."""

    name: str | None
    perms: Permissions | None

    def can_read(self, repo: str | None) -> bool:
        return repo is None or self.perms is None or self.perms.can(repo, PULL)


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


def _short(digest: Any) -> str:
    text = str(digest or "")
    algo, _, hexpart = text.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else text


def human_bytes(value: Any) -> str:
    """Sizes as people read them (1024-based, one decimal), blank when unknown."""
    if not isinstance(value, int):
        return ""
    size, unit = float(value), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["short"] = _short
    env.filters["path"] = lambda v: quote(str(v), safe="/:")
    env.filters["bytes"] = human_bytes
    env.globals["version"] = __version__
    env.globals["finding_severities"] = FINDING_SEVERITIES  # ``summary.combined``: every kind of finding
    env.globals["kind_labels"] = KIND_LABELS
    return env


class PortalBase:
    """The services pages call, and the session, CSRF and rendering steps around them; the page
    handlers are :class:`hallmark.portal.routes.Portal`, a subclass."""

    def __init__(self, hm: Hallmark) -> None:
        self.hm = hm
        self.run = hm.registry.run
        self.meta = hm.meta
        self.store = hm.pipeline.store
        self.env = environment()

    # -- plumbing ---------------------------------------------------------------------------------
    @staticmethod
    def access(request: web.Request) -> AccessService | None:
        return request.app[ACCESS_KEY] if ACCESS_KEY in request.app else None

    async def viewer(self, request: web.Request, required: bool = True) -> Viewer:
        """The caller and its permissions, resolved exactly as the API resolves them."""
        if self.access(request) is None:
            return Viewer(None, None)
        try:
            perms = await api_permissions(request)
        except ApiError as exc:  # expired, revoked or forged session cookie
            if required:
                raise _Bounce(clear=True) from exc
            return Viewer(None, None)
        if perms.identity.anonymous:
            if required:
                raise _Bounce()
            return Viewer(None, None)
        viewer = request["portal.viewer"] = Viewer(perms.identity.name, perms)
        return viewer

    @staticmethod
    def _csrf(request: web.Request) -> str:
        token = request.get("portal.csrf")
        if token is None:
            have = request.cookies.get(CSRF_COOKIE, "")
            token = have if 32 <= len(have) <= 64 and have.replace("-", "").replace("_", "").isalnum() else None
            request["portal.csrf"] = token or secrets.token_urlsafe(32)
            request["portal.csrf_new"] = token is None
        return str(request["portal.csrf"])

    async def check_form(self, request: web.Request) -> dict[str, str]:
        """The submitted form after the double-submit CSRF check (cookie vs. form field), plus Origin
        when the browser sends it."""
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise PortalFailure(403, "Cross-site form submission refused.")
        form = await request.post()
        sent = str(form.get("csrf", ""))
        have = request.cookies.get(CSRF_COOKIE, "")
        if not sent or not have or not hmac.compare_digest(sent.encode(), have.encode()):
            raise PortalFailure(
                403, "The form expired or was not sent by this portal (CSRF check failed). Reload and retry."
            )
        return {k: str(v) for k, v in form.items() if isinstance(v, str)}

    def render(
        self, request: web.Request, template: str, viewer: Viewer | None, status: int = 200, **ctx: Any
    ) -> web.Response:
        html = self.env.get_template(template).render(
            user=viewer.name if viewer else None,
            is_admin=bool(viewer and viewer.perms and viewer.perms.has_role("administrator")),
            is_auditor=bool(viewer and viewer.perms and actions.may(viewer, AUDITOR)),
            access=self.access(request) is not None,
            csrf=self._csrf(request),
            path=request.path,
            **ctx,
        )
        resp = web.Response(text=html, content_type="text/html", status=status)
        return self._finish(request, resp)

    def _finish(self, request: web.Request, resp: web.Response) -> web.Response:
        resp.headers.update(SECURITY_HEADERS)
        if request.get("portal.csrf_new"):
            resp.set_cookie(
                CSRF_COOKIE, self._csrf(request), httponly=True, samesite="Strict", secure=request.secure, path="/"
            )
        return resp

    def redirect(self, request: web.Request, location: str) -> web.Response:
        resp = web.Response(status=303, headers={"Location": location})
        return self._finish(request, resp)

    def page(self, handler: Handler) -> Handler:
        """Turn _Bounce/PortalFailure into a login redirect or an error page for every route."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except _Bounce as exc:
                resp = self.redirect(request, "/login?next=" + quote(request.path_qs, safe=""))
                if exc.clear:
                    resp.del_cookie(SESSION_COOKIE, path="/")
                return resp
            except PortalFailure as exc:
                viewer = request.get("portal.viewer")
                return self.render(request, "error.html", viewer, status=exc.status, message=exc.message)

        return wrapped

    async def denied(self, request: web.Request, status: int, message: str) -> web.StreamResponse:
        """The error page for a refusal decided before the handler (``web.auth.authorize``)."""
        viewer = await self.viewer(request, required=False)
        return self.render(request, "error.html", viewer, status=status, message=message)

    def _oidc(self) -> bool:
        """OpenID Connect login (``access/oidc.py``) ends in the same session cookie: offer it when on."""
        return bool(self.hm.config.access.oidc.issuer)

    # -- session ---------------------------------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.StreamResponse:
        nxt = safe_next(request.query.get("next"))
        if self.access(request) is None or (await self.viewer(request, required=False)).name:
            return self.redirect(request, nxt)
        return self.render(request, "login.html", None, next=nxt, error=None, username="", oidc=self._oidc())

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await self.check_form(request)
        access = self.access(request)
        nxt = safe_next(form.get("next"))
        if access is None:
            return self.redirect(request, nxt)
        username, password = form.get("username", "")[:128], form.get("password", "")[:1024]
        addr = client_addr(request)

        def refuse(status: int, error: str) -> web.Response:
            return self.render(
                request, "login.html", None, status, next=nxt, error=error, username=username, oidc=self._oidc()
            )

        if not username or not password:
            return refuse(400, "Enter a user name and a password.")
        if crypto.parse_token_id(password) is not None:
            # A (possibly scoped) token must not turn into an unscoped portal session.
            return refuse(401, "Sign in with your password; tokens are for the API and the registry.")
        try:
            ident = await self.run(access.authenticate, username, password, addr, True)
        except RateLimited:
            return refuse(429, "Too many failed logins; try again later.")
        except AuthFailed:
            return refuse(401, "Invalid user name or password.")
        if ident.kind != "user" or ident.token_id is not None:
            return refuse(401, "Only users can sign in to the portal.")
        _, token = await self.run(
            access.create_token, ident.name, ident.name, "portal session", None, SESSION_HOURS / 24, addr
        )
        resp = self.redirect(request, nxt)
        resp.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=SESSION_HOURS * 3600,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        # A fresh CSRF token for the new session: one planted before login is worthless after it.
        request["portal.csrf"], request["portal.csrf_new"] = secrets.token_urlsafe(32), True
        resp.set_cookie(
            CSRF_COOKIE, request["portal.csrf"], httponly=True, samesite="Strict", secure=request.secure, path="/"
        )
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await self.check_form(request)
        access = self.access(request)
        token = request.cookies.get(SESSION_COOKIE)
        if access is not None and token:
            addr = client_addr(request)
            try:
                ident = await self.run(access.authenticate_token, token, addr)
            except AuthFailed:
                ident = None  # already expired or revoked: only the cookie is left to drop
            if ident is not None and ident.token_id is not None:
                await self.run(access.revoke_token, ident.name, ident.token_id, addr)
        resp = self.redirect(request, "/login" if access is not None else "/")
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp
