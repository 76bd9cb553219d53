"""OIDC portal login (Authorization Code + PKCE) against a small OIDC provider written here.

No real OpenID provider package can run on this machine, so ``Provider`` below is a minimal
stand-in written with aiohttp: discovery document, JWKS (an RSA key from ``cryptography``),
an authorize endpoint that logs in a preset user and redirects back with a code, and a token
endpoint that checks the client secret, redirect URI and PKCE verifier before issuing an
RS256-signed ID token. Knobs on it produce the bad cases (wrong nonce, audience, signing key).
It proves Hallmark's side of the protocol, not interoperability with any particular product.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from hallmark.access.service import AccessService
from hallmark.config import load_config
from hallmark.metadata.db import make_engine, migrate
from tests.conftest import Server, free_port

CLIENT_ID = "hallmark-portal"
CLIENT_SECRET = "client-Secret-oidc-8812"
ADMIN_PW = "admin-Local-Pass-7731"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Provider:
    port: int
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    claims: dict[str, Any] = field(default_factory=dict)  # the user "logged in" at the provider
    nonce_override: str | None = None
    aud_override: str | None = None
    forge_with: rsa.RSAPrivateKey | None = None
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    pkce_checked: int = 0
    issued: list[str] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self, **claims: Any) -> None:
        self.claims, self.nonce_override, self.aud_override, self.forge_with = claims, None, None, None

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.issuer + "/token",
                "jwks_uri": self.issuer + "/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return web.json_response({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
        assert q["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {k: q[k] for k in ("redirect_uri", "nonce", "code_challenge")}
        raise web.HTTPFound(q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]}))

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        want = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != want:
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(str(form.get("code")), None)  # single use
        if grant is None or form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        if _b64(hashlib.sha256(str(form.get("code_verifier")).encode()).digest()) != grant["code_challenge"]:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE"}, status=400)
        self.pkce_checked += 1
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "sub-" + str(self.claims.get("preferred_username")).lower(),
            "aud": self.aud_override or CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonce_override or grant["nonce"],
            **self.claims,
        }
        id_token = jwt.encode(claims, self.forge_with or self.key, algorithm="RS256", headers={"kid": "k1"})
        self.issued.append(id_token)
        return web.json_response(
            {"access_token": "at-" + secrets.token_hex(8), "token_type": "Bearer", "id_token": id_token}
        )


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    prov = Provider(free_port())
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", prov.discovery)
    app.router.add_get("/jwks", prov.jwks)
    app.router.add_get("/authorize", prov.authorize)
    app.router.add_post("/token", prov.token)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", prov.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield prov
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def server(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("oidc-hm") / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    svc.add_user("test", "admin", ADMIN_PW, ["administrator"])
    svc.add_user("test", "localuser", ADMIN_PW)
    svc.create_team("test", "platform-team")
    svc.grant("test", "team", "platform-team", "namespace", "oidcns", "write")
    svc.audit.flush()
    engine.dispose()
    env = {
        "HALLMARK_ACCESS__OIDC__ISSUER": provider.issuer,
        "HALLMARK_ACCESS__OIDC__CLIENT_ID": CLIENT_ID,
        "HALLMARK_ACCESS__OIDC__CLIENT_SECRET": CLIENT_SECRET,
        "HALLMARK_ACCESS__OIDC__COOKIE_SECURE": "false",  # plain-http localhost in the test
        "HALLMARK_ACCESS__OIDC__GROUP_TEAMS__PLATFORM": "platform-team",
        "HALLMARK_ACCESS__OIDC__GROUP_ROLES__SECURITY": "security_reviewer",
    }
    srv = Server(data, env=env, access=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def set_cookies(resp: httpx.Response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in resp.headers.get_list("set-cookie")}


def cookie_value(header: str) -> str:
    return header.split("=", 1)[1].split(";", 1)[0]


@dataclass
class Outcome:
    callback: httpx.Response
    session: str | None


def run_flow(server: Server, tamper_state: bool = False, drop_flow_cookie: bool = False) -> Outcome:
    """Browser steps by hand: Hallmark login -> provider authorize -> Hallmark callback."""
    with httpx.Client(base_url=server.url, timeout=30) as hm:
        r = hm.get("/auth/oidc/login", params={"next": "/api/v1/me"}, follow_redirects=False)
        assert r.status_code == 302, r.text
        flow = set_cookies(r)["hallmark_oidc"]
        assert "HttpOnly" in flow and "SameSite=Lax" in flow
        auth_q = parse_qs(urlparse(r.headers["location"]).query)
        assert auth_q["code_challenge_method"] == ["S256"] and "code_verifier" not in auth_q
        back = httpx.get(r.headers["location"], follow_redirects=False, timeout=30)
        assert back.status_code == 302
        url = back.headers["location"]
        if tamper_state:
            q = parse_qs(urlparse(url).query)
            state = q["state"][0]
            forged = ("y" if state[0] == "x" else "x") + state[1:]  # always differs (1 in 64 states start with x)
            url = url.split("?")[0] + "?" + urlencode({"code": q["code"][0], "state": forged})
        headers = {} if drop_flow_cookie else {"Cookie": "hallmark_oidc=" + cookie_value(flow)}
        cb = httpx.get(url, headers=headers, follow_redirects=False, timeout=30)
    session = set_cookies(cb).get("hallmark_session")
    return Outcome(cb, cookie_value(session) if session and cookie_value(session) else None)


def test_login_issues_session_cookie_and_maps_groups(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="Olga", groups=["platform", "security"])
    before = provider.pkce_checked
    out = run_flow(server)
    assert out.callback.status_code == 303 and out.callback.headers["location"] == "/api/v1/me"
    assert provider.pkce_checked == before + 1  # the provider verified our code_verifier
    header = set_cookies(out.callback)["hallmark_session"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    assert out.session and out.session.startswith("hmk_")
    # The session token works as a bearer token, and as the cookie identify() accepts on reads.
    me = httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {out.session}"})
    assert me.status_code == 200 and "olga" in me.text
    assert "platform-team" in me.text and "security_reviewer" in me.text
    me2 = httpx.get(server.url + "/api/v1/me", headers={"Cookie": f"hallmark_session={out.session}"})
    assert me2.status_code == 200 and "olga" in me2.text


def test_group_removed_loses_role_at_next_login(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="olga", groups=["platform"])
    out = run_flow(server)
    assert out.session
    me = httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {out.session}"})
    assert "platform-team" in me.text and "security_reviewer" not in me.text


def test_state_mismatch_is_rejected(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="olga", groups=["platform"])
    out = run_flow(server, tamper_state=True)
    assert out.callback.status_code == 401 and "state mismatch" in out.callback.text
    assert out.session is None


def test_callback_without_flow_cookie_is_rejected(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="olga", groups=["platform"])
    out = run_flow(server, drop_flow_cookie=True)
    assert out.callback.status_code == 401 and out.session is None


def test_nonce_mismatch_is_rejected(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="olga", groups=["platform"])
    provider.nonce_override = "replayed-nonce"
    out = run_flow(server)
    assert out.callback.status_code == 401 and "nonce" in out.callback.text
    assert out.session is None


def test_wrong_audience_is_rejected(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="olga", groups=["platform"])
    provider.aud_override = "another-client"
    out = run_flow(server)
    assert out.callback.status_code == 401 and "InvalidAudience" in out.callback.text
    assert out.session is None


def test_forged_signature_is_rejected(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="olga", groups=["platform", "security"])
    provider.forge_with = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    out = run_flow(server)
    assert out.callback.status_code == 401 and out.session is None


def test_local_password_account_is_not_taken_over(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="localuser", groups=["security"])
    out = run_flow(server)
    assert out.callback.status_code == 403 and out.session is None


@pytest.mark.parametrize("nxt", ["//evil.example/x", "/\t/evil.example", "/\\evil.example", "/%0a/x\n/evil.example"])
def test_next_is_never_an_open_redirect(server: Server, provider: Provider, nxt: str) -> None:
    """Browsers drop tabs and newlines from a Location: "/\t/evil.example" is "//evil.example" to them."""
    provider.reset(preferred_username="olga", groups=[])
    with httpx.Client(base_url=server.url, timeout=30) as hm:
        r = hm.get("/auth/oidc/login", params={"next": nxt}, follow_redirects=False)
        flow = cookie_value(set_cookies(r)["hallmark_oidc"])
        back = httpx.get(r.headers["location"], follow_redirects=False)
        cb = httpx.get(back.headers["location"], headers={"Cookie": f"hallmark_oidc={flow}"}, follow_redirects=False)
    assert cb.status_code == 303 and cb.headers["location"] == "/"


def test_logout_revokes_the_session(server: Server, provider: Provider) -> None:
    provider.reset(preferred_username="olga", groups=["platform"])
    out = run_flow(server)
    assert out.session
    r = httpx.post(server.url + "/auth/oidc/logout", headers={"Cookie": f"hallmark_session={out.session}"})
    assert r.status_code == 204
    me = httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {out.session}"})
    assert me.status_code == 401


def test_no_secret_in_server_log(server: Server, provider: Provider) -> None:
    text = (server.data_dir.parent / f"server-{server.port}.log").read_text(errors="replace")
    assert CLIENT_SECRET not in text and ADMIN_PW not in text
    for tok in provider.issued:
        assert tok not in text


def test_same_name_other_subject_is_refused(server: Server, provider: Provider) -> None:
    """A provider account that merely claims an existing name does not inherit that shadow user."""
    provider.reset(preferred_username="olga", sub="someone-else", groups=["security"])
    out = run_flow(server)
    assert out.callback.status_code == 403 and out.session is None
