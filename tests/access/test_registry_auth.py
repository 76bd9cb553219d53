"""Docker token auth and per-request authorization on /v2, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.config import load_config
from hallmark.metadata import secrets as instance_secrets
from hallmark.metadata.db import make_engine
from tests.access.conftest import Site
from tests.ocihelp import push_blob, push_image


def _challenge(r: httpx.Response) -> str:
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    return r.headers["WWW-Authenticate"]


def test_unauthenticated_gets_bearer_challenge(site: Site) -> None:
    base = site.server.url
    r = httpx.get(base + "/v2/")
    assert _challenge(r) == f'Bearer realm="{base}/auth/token",service="hallmark"'
    r = httpx.post(base + "/v2/team-a/app/blobs/uploads/")
    assert _challenge(r) == (
        f'Bearer realm="{base}/auth/token",service="hallmark",scope="repository:team-a/app:pull,push"'
    )
    r = httpx.get(base + "/v2/team-a/app/manifests/v1")
    assert 'scope="repository:team-a/app:pull,push"' in _challenge(r)
    assert 'scope="registry:catalog:*"' in _challenge(httpx.get(base + "/v2/_catalog"))


def test_token_grants_only_what_is_permitted(site: Site) -> None:
    def granted(user: str | None, *scopes: str) -> list[dict[str, object]]:
        claims = jwt.decode(site.token(user, *scopes), options={"verify_signature": False})
        assert claims["aud"] == "hallmark" and claims["exp"] - claims["iat"] == 300
        return list(claims["access"])

    assert granted("alice", "repository:team-a/app:pull,push") == [
        {"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}
    ]
    assert granted("alice", "repository:other/x:pull,push") == []
    assert granted("bob", "repository:team-a/app:pull,push,delete") == [
        {"type": "repository", "name": "team-a/app", "actions": ["pull"]}
    ]
    assert granted("bob", "repository:team-a/other:pull") == []
    assert granted(None, "repository:pub/app:pull,push") == [
        {"type": "repository", "name": "pub/app", "actions": ["pull"]}
    ]
    assert granted(None, "repository:team-a/app:pull") == []
    # '*' is never more than the permitted actions.
    assert granted("alice", "repository:team-a/app:*") == [
        {"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}
    ]
    assert granted("admin", "repository:x/y:*")[0]["actions"] == ["delete", "pull", "push"]


def test_bad_credentials_on_token_endpoint(site: Site) -> None:
    url = site.server.url + "/auth/token"
    r = httpx.get(url, params={"scope": "repository:team-a/app:pull"}, auth=("bob", "wrong-password"))
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    r = httpx.get(url, auth=("nobody-here", "whatever-password"))
    assert r.status_code == 401
    r = httpx.get(url, params={"service": "elsewhere"}, auth=("bob", site.passwords["bob"]))
    assert r.status_code == 400


def test_push_and_pull_with_tokens(site: Site) -> None:
    with site.client("alice", "repository:team-a/app:pull,push") as c:
        digest = push_image(c, "team-a/app", "v1")
        assert c.get("/v2/team-a/app/manifests/v1").status_code == 200
    with site.client("bob", "repository:team-a/app:pull") as c:
        r = c.get("/v2/team-a/app/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
        assert c.get("/v2/team-a/app/tags/list").json()["tags"] == ["v1"]
    with site.client("alice", "repository:pub/app:pull,push") as c:
        push_image(c, "pub/app", "latest")
    # Anonymous pull of a public repository, straight away and through an anonymous token.
    assert httpx.get(site.server.url + "/v2/pub/app/manifests/latest").status_code == 200
    with site.client(None, "repository:pub/app:pull") as c:
        assert c.get("/v2/pub/app/manifests/latest").status_code == 200
    assert httpx.get(site.server.url + "/v2/team-a/app/manifests/v1").status_code == 401


def test_denied_push_and_pull(site: Site) -> None:
    with site.client("bob", "repository:team-a/app:pull,push") as c:
        r = c.post("/v2/team-a/app/blobs/uploads/")
        assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    with site.client("bob", basic=True) as c:
        r = c.post("/v2/team-a/app/blobs/uploads/")
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
        assert c.get("/v2/team-a/app/manifests/v1").status_code == 200  # read is granted via the team
        assert c.get("/v2/pub/app/manifests/latest").status_code == 200
        assert c.get("/v2/other/thing/manifests/v1").status_code == 403
    with site.client("alice", basic=True) as c:
        assert c.put("/v2/other/thing/manifests/v1", content=b"{}").status_code == 403
    # Anonymous push to a public repository: still needs credentials.
    assert httpx.post(site.server.url + "/v2/pub/app/blobs/uploads/").status_code == 401


def test_scope_escalation_is_refused(site: Site) -> None:
    with site.client("alice", "repository:team-a/app:pull,push") as a:
        # Token for repository A used on repository B that alice could push to.
        r = a.post("/v2/team-a/other/blobs/uploads/")
        assert r.status_code == 401 and "repository:team-a/other:pull,push" in r.headers["WWW-Authenticate"]
        assert a.get("/v2/pub/app/manifests/latest").status_code == 401
    with site.client("alice", "repository:team-a/app:pull") as p:
        # A pull token used to push.
        assert p.post("/v2/team-a/app/blobs/uploads/").status_code == 401
        assert p.put("/v2/team-a/app/manifests/v2", content=b"{}").status_code == 401
        # A JWT cannot mint another (wider) JWT.
        r = httpx.get(
            site.server.url + "/auth/token",
            params={"scope": "repository:team-a/app:push"},
            headers={"Authorization": p.headers["Authorization"]},
        )
        assert r.status_code == 401


def test_delete_needs_admin_or_delete_permission(site: Site) -> None:
    with site.client("alice", "repository:team-a/app:pull,push") as c:
        digest = push_image(c, "team-a/app", "to-delete")
    with site.client("alice", basic=True) as c:
        assert c.delete(f"/v2/team-a/app/manifests/{digest}").status_code == 403
    assert "delete" not in json.dumps(
        jwt.decode(site.token("alice", "repository:team-a/app:delete"), options={"verify_signature": False})
    )
    with site.client("admin", "repository:team-a/app:delete") as c:
        assert c.delete(f"/v2/team-a/app/manifests/{digest}").status_code == 202


def test_cross_repository_mount_needs_pull_on_source(site: Site) -> None:
    with site.client("admin", "repository:secret/x:pull,push") as c:
        data = b"secret layer bytes"
        digest = push_blob(c, "secret/x", data)
    with site.client("alice", "repository:team-a/m:pull,push", "repository:secret/x:pull") as c:
        r = c.post("/v2/team-a/m/blobs/uploads/", params={"mount": digest, "from": "secret/x"})
        assert r.status_code == 202  # a plain upload session instead of the mount
        assert c.head(f"/v2/team-a/m/blobs/{digest}").status_code == 404
    with site.client("alice", "repository:team-a/app:pull,push") as c:
        own = push_blob(c, "team-a/app", b"alice layer")
    with site.client("alice", "repository:team-a/m:pull,push", "repository:team-a/app:pull") as c:
        r = c.post("/v2/team-a/m/blobs/uploads/", params={"mount": own, "from": "team-a/app"})
        assert r.status_code == 201


def test_catalog_lists_only_readable(site: Site) -> None:
    with site.client("bob", "registry:catalog:*") as c:
        assert c.get("/v2/_catalog").json()["repositories"] == ["pub/app", "team-a/app"]
    with site.client("admin", basic=True) as c:
        names = c.get("/v2/_catalog").json()["repositories"]
        assert {"secret/x", "team-a/app", "pub/app"} <= set(names)
        page = c.get("/v2/_catalog", params={"n": "1"})
        assert len(page.json()["repositories"]) == 1 and "Link" in page.headers


def test_robot_token_and_immediate_revocation(site: Site) -> None:
    with site.client("ci-bot", basic=True) as c:
        push_image(c, "team-a/robot", "v1")
        assert c.post("/v2/pub/app/blobs/uploads/").status_code == 403  # outside its scope
    jwt_client = site.client("ci-bot", "repository:team-a/robot:pull")
    assert jwt_client.get("/v2/team-a/robot/manifests/v1").status_code == 200
    with site.client("admin", basic=True) as admin:
        assert admin.delete("/api/v1/robots/ci-bot").json() == {"revoked_tokens": 1}
    with site.client("ci-bot", basic=True) as c:
        assert c.get("/v2/team-a/robot/manifests/v1").status_code == 401
    # The JWT obtained with the robot token dies with it, before its expiry.
    assert jwt_client.get("/v2/team-a/robot/manifests/v1").status_code == 401
    jwt_client.close()
    r = httpx.get(site.server.url + "/auth/token", auth=("ci-bot", site.robot_token))
    assert r.status_code == 401


def _forge(payload: dict[str, object], key: object, alg: str = "ES256", headers: dict[str, str] | None = None) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers=headers)  # type: ignore[arg-type]


def test_forged_and_malformed_credentials_get_401(site: Site) -> None:
    good = jwt.decode(site.token("admin", "repository:team-a/app:pull"), options={"verify_signature": False})
    now = int(time.time())
    other_key = ec.generate_private_key(ec.SECP256R1())
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    none_token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(good)}."
    forged = [
        none_token,
        _forge(good, other_key),
        _forge({**good, "exp": now - 3600, "iat": now - 7200, "nbf": now - 7200}, other_key),
        _forge(good, "shared-secret-guess-" * 4, "HS256"),
        _forge(
            good,
            other_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
            .replace("\n", "")[:40],
            "HS256",
        ),
        "x" * 7000,  # oversized (aiohttp's own 8 KiB header limit answers 400 beyond that)
        _forge({**good, "pad": "p" * 4700}, other_key),
        "not.a.jwt",
        site.token("admin", "repository:team-a/app:pull")[:-4] + "AAAA",
    ]
    for token in forged:
        r = httpx.get(site.server.url + "/v2/team-a/app/manifests/v1", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (token[:40], r.status_code, r.text)
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    for header in [
        "Bearer",
        "Bearer a b c",
        "Basic Og==",
        "Basic",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Digest username=x",
        "Basic " + "A" * 7500,
        "bearer\tx",
    ]:
        r = httpx.get(site.server.url + "/v2/team-a/app/manifests/v1", headers={"Authorization": header})
        assert r.status_code == 401, (header[:30], r.status_code, r.text)
        r = httpx.get(site.server.url + "/api/v1/me", headers={"Authorization": header})
        assert r.status_code == 401, (header[:30], r.status_code)


def test_expired_and_wrong_audience_tokens_signed_with_the_real_key(site: Site) -> None:
    env = {"HALLMARK_DATA_DIR": str(site.server.data_dir)}
    if site.server.db_url:
        env["HALLMARK_DATABASE_URL"] = site.server.db_url
    engine = make_engine(load_config(environ=env).database_url, 1)
    pem = instance_secrets.read(engine, instance_secrets.TOKEN_SIGNING_KEY)
    engine.dispose()
    assert pem is not None
    key = serialization.load_pem_private_key(pem.encode(), None)
    # The key lives in the database (shared by replicas), not in the data folder.
    assert not (site.server.data_dir / "access" / "token-signing-key.pem").exists()
    good = jwt.decode(site.token("admin", "repository:team-a/app:pull"), options={"verify_signature": False})
    now = int(time.time())
    url = site.server.url + "/v2/team-a/app/manifests/v1"
    ok = _forge(good, key)
    assert httpx.get(url, headers={"Authorization": f"Bearer {ok}"}).status_code == 200  # the control
    for claims in [
        {**good, "exp": now - 60, "iat": now - 400},
        {**good, "aud": "other-registry"},
        {**good, "iss": "someone-else"},
        {k: v for k, v in good.items() if k != "exp"},
        {**good, "hmk": {"pid": 999999, "kind": "user"}},
        {**good, "hmk": {"kind": "user"}},
    ]:
        r = httpx.get(url, headers={"Authorization": f"Bearer {_forge(claims, key)}"})
        assert r.status_code == 401, claims


def test_audit_trail_of_registry_actions(site: Site) -> None:
    with site.client("audra", basic=True) as c:
        deadline = time.monotonic() + 5
        while True:
            entries = c.get("/api/v1/audit", params={"repo": "team-a/app"}).json()["entries"]
            actions = {(e["actor"], e["action"], e["result"]) for e in entries}
            if ("alice", "push", "allowed") in actions or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert {("alice", "push", "allowed"), ("bob", "pull", "allowed"), ("admin", "delete", "allowed")} <= actions
        assert ("alice", "delete", "denied") in actions
        push = next(e for e in entries if e["action"] == "push")
        assert push["digest"].startswith("sha256:") and push["client_addr"] == "127.0.0.1"
        assert push["detail"]["tag"] in {"v1", "to-delete"}
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
        logins = c.get("/api/v1/audit", params={"action": "login", "since": since}).json()["entries"]
        assert any(e["actor"] == "bob" and e["result"] == "denied" for e in logins)
        assert c.get("/api/v1/audit/verify").json()["ok"] is True
        lines = c.get("/api/v1/audit/export").text.splitlines()
        assert len(lines) >= len(entries) and all(json.loads(line)["hash"] for line in lines)
    with site.client("bob", basic=True) as c:
        assert c.get("/api/v1/audit").status_code == 403


@pytest.mark.parametrize("user", ["bob", "alice"])
def test_api_administration_is_admin_only(site: Site, user: str) -> None:
    with site.client(user, basic=True) as c:
        assert c.get("/api/v1/users").status_code == 403
        assert c.post("/api/v1/users", json={"name": "mallory", "password": "x" * 12}).status_code == 403
        grant = {"subject": user, "scope_kind": "catalog", "role": "administrator"}
        assert c.post("/api/v1/permissions", json=grant).status_code == 403
        assert c.patch("/api/v1/repositories/team-a/app", json={"immutable_tags": True}).status_code == 403
    assert httpx.get(site.server.url + "/api/v1/users").status_code == 401


def test_api_user_team_permission_lifecycle(site: Site) -> None:
    with site.client("admin", basic=True) as c:
        assert c.post("/api/v1/users", json={"name": "carol", "password": "carol-pass-123"}).status_code == 201
        assert c.post("/api/v1/users", json={"name": "carol", "password": "carol-pass-123"}).status_code == 409
        assert c.post("/api/v1/users", json={"name": "Bad Name", "password": "carol-pass-123"}).status_code == 400
        assert c.post("/api/v1/users", json={"name": "x", "password": "short"}).status_code == 400
        grant = {"subject": "carol", "scope_kind": "repository", "scope": "carol/app", "role": "write"}
        assert c.post("/api/v1/permissions", json=grant).status_code == 201
        assert c.post("/api/v1/permissions", json={**grant, "role": "owner"}).status_code == 400
    carol = httpx.Client(base_url=site.server.url, auth=("carol", "carol-pass-123"))
    me = carol.get("/api/v1/me").json()
    assert me["name"] == "carol" and me["permissions"] == [
        {"scope_kind": "repository", "scope": "carol/app", "actions": ["pull", "push"]}
    ]
    push_image(carol, "carol/app", "v1")
    # A personal token, narrowed to pull, shown once.
    tok = carol.post("/api/v1/tokens", json={"scopes": ["repository:carol/app:pull"]}).json()
    site.secrets.append(tok["token"])
    with httpx.Client(base_url=site.server.url, auth=("carol", tok["token"])) as t:
        assert t.get("/v2/carol/app/manifests/v1").status_code == 200
        assert t.post("/v2/carol/app/blobs/uploads/").status_code == 403
        # The narrow token cannot mint a wider one.
        assert t.post("/api/v1/tokens", json={"scopes": ["repository:carol/app:pull,push"]}).status_code == 403
    assert "token" not in carol.get("/api/v1/tokens").json()["tokens"][0]
    assert carol.delete(f"/api/v1/tokens/{tok['id']}").status_code == 204
    with httpx.Client(base_url=site.server.url, auth=("carol", tok["token"])) as t:
        assert t.get("/v2/carol/app/manifests/v1").status_code == 401
    with site.client("admin", basic=True) as c:
        assert c.patch("/api/v1/repositories/carol/app", json={"immutable_tags": True}).status_code == 200
        assert c.request("DELETE", "/api/v1/permissions", json=grant).status_code == 204
        assert c.patch("/api/v1/users/carol", json={"disabled": True}).status_code == 200
    assert carol.get("/api/v1/me").status_code == 401
    carol.close()
