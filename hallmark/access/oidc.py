"""OpenID Connect login for the portal (``access.oidc``): Authorization Code flow with PKCE.

``GET /auth/oidc/login`` sends the browser to the provider with a fresh state, nonce and PKCE
challenge, kept in an HMAC-signed, HttpOnly flow cookie (so any worker process can finish the
flow, and a callback not started by this browser is refused). ``GET /auth/oidc/callback``
exchanges the code, validates the ID token against the provider's JWKS (signature, iss, aud,
exp, nonce), maps its groups claim to teams and catalog roles on a shadow user, and starts a
session: a revocable personal token in the ``hallmark_session`` cookie (HttpOnly, SameSite=Lax so
it survives the redirect back from the provider, Secure unless ``cookie_secure = false``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import orjson
from aiohttp import web

from hallmark.access import crypto, shadow
from hallmark.access.audit import ALLOWED, DENIED
from hallmark.access.model import CATALOG_ROLES, safe_next, valid_principal_name
from hallmark.access.service import AccessService, AuthFailed
from hallmark.config import Config
from hallmark.metadata import secrets as instance_secrets

log = logging.getLogger(__name__)

SOURCE = "oidc"
SESSION_COOKIE = "hallmark_session"
FLOW_COOKIE = "hallmark_oidc"
FLOW_SECONDS = 600


class OidcError(Exception):
    """The login cannot complete; the message is safe to show and log (no token, code or secret)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OidcLogin:
    def __init__(self, access: AccessService, config: Config) -> None:
        cfg = config.access.oidc
        if not cfg.issuer or not cfg.client_id:
            raise ValueError("access.oidc needs issuer and client_id")
        for roles in cfg.group_roles.values():
            if set(roles) - CATALOG_ROLES:
                raise ValueError(f"access.oidc.group_roles: unknown catalog roles {sorted(set(roles) - CATALOG_ROLES)}")
        self.access, self.config, self.cfg = access, config, cfg
        self.issuer: str = cfg.issuer
        self.client_id: str = cfg.client_id
        self.client_secret = cfg.client_secret
        if cfg.client_secret_file:
            self.client_secret = Path(cfg.client_secret_file).read_text(encoding="utf-8").strip()
        # Shared by every replica (the callback may reach another one than the login).
        self._flow_key = instance_secrets.get_or_create(
            access.store.engine,
            instance_secrets.OIDC_FLOW_KEY,
            lambda: _b64(secrets.token_bytes(32)),
            config.data_path / "access" / "oidc-flow-key",
        ).encode()
        self._discovery: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, dict[str, jwt.PyJWK]] = (0.0, {})

    # -- provider metadata --------------------------------------------------------------------
    async def _get_json(self, url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=self.cfg.timeout_seconds) as client:
            r = await client.get(url)
        if r.status_code != 200:
            raise OidcError(f"provider answered {r.status_code} for {url}")
        doc = r.json()
        if not isinstance(doc, dict):
            raise OidcError(f"provider sent no JSON object for {url}")
        return doc

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None or self._discovery[0] < time.monotonic():
            doc = await self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if doc.get("issuer") != self.issuer:
                raise OidcError("discovery document names another issuer")
            for k in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(k), str):
                    raise OidcError(f"discovery document lacks {k}")
            self._discovery = (time.monotonic() + 3600, doc)
        return self._discovery[1]

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        """The JWKS key for ``kid``; refetched (at most every 30 s) when unknown, for key rotation."""
        fetched, keys = self._jwks
        stale = fetched + 3600 < time.monotonic()
        if stale or (kid not in keys and (not keys or time.monotonic() - fetched > 30)):
            doc = await self._get_json((await self.discovery())["jwks_uri"])
            keys = {}
            for raw in doc.get("keys") or []:
                try:
                    k = jwt.PyJWK(raw)
                except (jwt.PyJWKError, jwt.InvalidKeyError):
                    continue  # unsupported key types are skipped, not fatal
                if raw.get("use", "sig") == "sig":
                    keys[k.key_id or ""] = k
            self._jwks = (time.monotonic(), keys)
        if kid is not None and kid in keys:
            return keys[kid]
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        raise OidcError("ID token signed with an unknown key")

    # -- flow cookie ------------------------------------------------------------------------------
    def _seal(self, payload: dict[str, Any]) -> str:
        body = _b64(orjson.dumps(payload))
        return body + "." + _b64(hmac.new(self._flow_key, body.encode(), hashlib.sha256).digest())

    def _open(self, value: str | None) -> dict[str, Any]:
        body, _, mac = (value or "").partition(".")
        want = _b64(hmac.new(self._flow_key, body.encode(), hashlib.sha256).digest())
        if not body or not hmac.compare_digest(mac.encode(), want.encode()):
            raise OidcError("login was not started from this browser (missing or altered flow cookie)")
        payload: dict[str, Any] = orjson.loads(_unb64(body))
        if float(payload.get("e", 0)) < time.time():
            raise OidcError("login took too long; start again")
        return payload

    def _redirect_uri(self, request: web.Request) -> str:
        if self.cfg.redirect_uri:
            return self.cfg.redirect_uri
        base = self.config.server.public_url or f"{request.scheme}://{request.host}"
        return base.rstrip("/") + "/auth/oidc/callback"

    def _cookie_args(self) -> dict[str, Any]:
        return {"httponly": True, "secure": self.cfg.cookie_secure, "samesite": "Lax"}

    # -- handlers ---------------------------------------------------------------------------------------
    async def login(self, request: web.Request) -> web.StreamResponse:
        try:
            disc = await self.discovery()
        except (OidcError, httpx.HTTPError, ValueError) as exc:
            log.warning("OIDC discovery failed: %s", exc)
            return _error(502, "identity provider unavailable")
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self._redirect_uri(request),
            "scope": " ".join(self.cfg.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        resp = web.HTTPFound(disc["authorization_endpoint"] + "?" + urlencode(params))
        flow: dict[str, Any] = {"s": state, "n": nonce, "v": verifier, "r": safe_next(request.query.get("next"))}
        flow["e"] = time.time() + FLOW_SECONDS
        resp.set_cookie(FLOW_COOKIE, self._seal(flow), max_age=FLOW_SECONDS, path="/auth/oidc/", **self._cookie_args())
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def callback(self, request: web.Request) -> web.StreamResponse:
        addr = request.remote
        try:
            flow = self._open(request.cookies.get(FLOW_COOKIE))
            if "error" in request.query:
                raise OidcError(f"provider refused the login: {request.query['error'][:100]}")
            state = request.query.get("state", "")
            if not hmac.compare_digest(state.encode(), str(flow["s"]).encode()):
                raise OidcError("state mismatch")
            code = request.query.get("code")
            if not code:
                raise OidcError("no authorization code")
            claims = await self._exchange(code, str(flow["v"]), str(flow["n"]), self._redirect_uri(request))
            name, groups = self._identity(claims)
        except (OidcError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc) if isinstance(exc, OidcError) else f"bad provider response ({type(exc).__name__})"
            self.access.audit.record(
                "unknown", "login", result=DENIED, client_addr=addr, detail={"via": SOURCE, "reason": reason}
            )
            resp = _error(401, reason)
            resp.del_cookie(FLOW_COOKIE, path="/auth/oidc/")
            return resp
        loop = asyncio.get_running_loop()
        token = await loop.run_in_executor(None, self._start_session, name, claims, groups, addr)
        if token is None:
            return _error(403, "this account cannot log in with OpenID Connect")
        resp = web.HTTPSeeOther(safe_next(str(flow.get("r"))))
        resp.del_cookie(FLOW_COOKIE, path="/auth/oidc/")
        resp.set_cookie(
            SESSION_COOKIE, token, max_age=self.cfg.session_lifetime_seconds, path="/", **self._cookie_args()
        )
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """Revoke the session token and clear the cookie."""
        token = request.cookies.get(SESSION_COOKIE, "")
        tid = crypto.parse_token_id(token)
        if tid is not None:
            loop = asyncio.get_running_loop()
            try:
                ident = await loop.run_in_executor(None, self.access.authenticate_token, token, request.remote)
                await loop.run_in_executor(None, self.access.revoke_token, ident.name, tid, request.remote)
            except AuthFailed:
                pass  # an invalid or revoked cookie is simply cleared
        resp = web.Response(status=204)
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    # -- steps --------------------------------------------------------------------------------------------
    async def _exchange(self, code: str, verifier: str, nonce: str, redirect_uri: str) -> dict[str, Any]:
        disc = await self.discovery()
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": self.client_id,
        }
        async with httpx.AsyncClient(timeout=self.cfg.timeout_seconds) as client:
            headers = {"Accept": "application/json"}
            if self.client_secret:  # client_secret_basic
                auth = httpx.BasicAuth(self.client_id, self.client_secret)
                r = await client.post(disc["token_endpoint"], data=data, auth=auth, headers=headers)
            else:  # a public client: PKCE alone
                r = await client.post(disc["token_endpoint"], data=data, headers=headers)
        if r.status_code != 200:
            raise OidcError(f"token endpoint answered {r.status_code}")
        id_token = r.json().get("id_token")
        if not isinstance(id_token, str) or len(id_token) > 16384:
            raise OidcError("token endpoint sent no ID token")
        return await self.validate_id_token(id_token, nonce)

    async def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
            if header.get("alg") not in self.cfg.algorithms:
                raise OidcError(f"ID token algorithm {str(header.get('alg'))[:20]!r} not accepted")
            key = await self._signing_key(header.get("kid"))
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=self.cfg.algorithms,
                audience=self.client_id,
                issuer=self.issuer,
                leeway=60,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise OidcError(f"invalid ID token: {type(exc).__name__}") from None
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise OidcError("invalid ID token: azp is not this client")
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise OidcError("nonce mismatch")
        return claims

    def _identity(self, claims: dict[str, Any]) -> tuple[str, list[str]]:
        name = str(claims.get(self.cfg.username_claim) or "").lower()
        if not valid_principal_name(name):
            raise OidcError(f"claim {self.cfg.username_claim!r} is not a usable user name")
        raw = claims.get(self.cfg.groups_claim) or []
        groups = [raw] if isinstance(raw, str) else [str(g) for g in raw if isinstance(g, str | int)]
        return name, groups

    def _start_session(self, name: str, claims: dict[str, Any], groups: list[str], addr: str | None) -> str | None:
        cfg = self.cfg
        subject = f"{claims['iss']}#{claims['sub']}"
        p = shadow.sync_user(
            self.access, name, SOURCE, subject, groups, cfg.group_teams, cfg.group_roles, addr, same_subject=True
        )
        if p is None or p.disabled:
            reason = "account disabled" if p else "name taken by another account"
            self.access.audit.record(
                name, "login", result=DENIED, client_addr=addr, detail={"via": SOURCE, "reason": reason}
            )
            return None
        _, token = self.access.create_token(
            SOURCE, name, "portal session (oidc)", None, cfg.session_lifetime_seconds / 86400, addr
        )
        self.access.audit.record(name, "login", result=ALLOWED, client_addr=addr, detail={"via": SOURCE})
        return token


def _error(status: int, message: str) -> web.Response:
    code = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "DENIED"}.get(status, "UNAVAILABLE")
    body = {"errors": [{"code": code, "message": message}]}
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def routes(access: AccessService, config: Config) -> list[web.RouteDef]:
    oidc = OidcLogin(access, config)
    return [
        web.get("/auth/oidc/login", oidc.login),
        web.get("/auth/oidc/callback", oidc.callback),
        web.post("/auth/oidc/logout", oidc.logout),
    ]
