"""Every route, every kind of caller: the authorization table holds, whatever the repository is called.

The expectations below are written independently of the declarations in the code: a route
declared too loosely (or not at all) fails here. A new route must be added to ``EXPECTED``.
Repository names deliberately contain ``images``, ``manifests``, ``blobs`` and ``tags`` segments,
which once slipped past a path-prefix check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from hallmark.access.service import AccessService
from hallmark.app import Hallmark, build_app
from hallmark.config import load_config
from hallmark.metadata.db import make_engine, migrate
from hallmark.web.authz import PUBLIC, route, undeclared
from tests.conftest import Server
from tests.ocihelp import push_image

REPOS = ["corp/images/base", "corp/manifests/app", "corp/blobs/x", "corp/tags/y"]
DIGEST = "sha256:" + "ab" * 32

# (method, canonical path) -> what the route needs. Kinds:
#   public, anyone (anonymous allowed, listing filtered), login, administrator, auditor,
#   reviewer+pull (security_reviewer role and pull on the repository), pull, push, delete, admin (repository)
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    # Prometheus metrics on the main port: administrators (a separate metrics_listen port is open)
    ("GET", "/metrics"): "administrator",
    ("GET", "/auth/token"): "public",
    ("POST", "/auth/token"): "public",
    # Kubernetes admission webhooks: called by the API server without a user (TLS authenticates)
    ("POST", "/admission/validate"): "public",
    ("POST", "/admission/mutate"): "public",
    ("GET", "/api/v1/images"): "login",
    ("GET", "/api/v1/repositories/{name}/images/{digest}"): "pull",
    ("GET", "/api/v1/repositories/{name}/images/{digest}/reports/{kind}"): "pull",
    ("POST", "/api/v1/repositories/{name}/images/{digest}/rescan"): "push",
    ("GET", "/api/v1/events"): "login",
    ("GET", "/api/v1/advisories"): "login",
    ("POST", "/api/v1/advisories/update"): "administrator",
    ("GET", "/api/v1/advisories/{id}"): "login",  # images limited to what the caller may pull
    ("GET", "/api/v1/repositories/{name}/images/{digest}/verification"): "pull",
    ("POST", "/api/v1/repositories/{name}/images/{digest}/sign"): "reviewer+pull",
    ("POST", "/api/v1/vex"): "reviewer",
    ("GET", "/api/v1/vex"): "login",
    ("DELETE", "/api/v1/vex/{id}"): "reviewer",
    ("POST", "/api/v1/repositories/{name}/images/{digest}/vex"): "reviewer+pull",
    ("GET", "/api/v1/explore"): "reviewer|auditor",  # spans every repository and cluster
    ("GET", "/api/v1/catalog"): "login",
    ("GET", "/api/v1/repositories/{name}/images/{digest}/catalog"): "pull",
    ("GET", "/api/v1/repositories/{name}/images/{digest}/provenance"): "pull",
    ("POST", "/api/v1/provenance"): "push",  # the repository is the body's "image" (see _body)
    ("PATCH", "/api/v1/repositories/{name}/images/{digest}/catalog"): "admin",
    ("POST", "/api/v1/repositories/{name}/images/{digest}/catalog/promote"): "reviewer+pull",
    ("POST", "/api/v1/gc"): "administrator",
    ("GET", "/api/v1/repositories"): "anyone",
    ("GET", "/api/v1/repositories/{name}"): "pull",
    ("PATCH", "/api/v1/repositories/{name}"): "admin",
    ("GET", "/api/v1/repositories/{name}/tags/{tag}/history"): "pull",
    ("POST", "/api/v1/repositories/{name}/tags/{tag}/restore"): "push",
    ("GET", "/api/v1/repositories/{name}/retention"): "admin",
    ("PUT", "/api/v1/repositories/{name}/retention"): "admin",
    ("GET", "/api/v1/namespaces/{name}/retention"): "administrator",
    ("PUT", "/api/v1/namespaces/{name}/retention"): "administrator",
    ("GET", "/api/v1/me"): "login",
    ("GET", "/api/v1/users"): "administrator",
    ("POST", "/api/v1/users"): "administrator",
    ("PATCH", "/api/v1/users/{name}"): "administrator",
    ("DELETE", "/api/v1/users/{name}"): "administrator",
    ("GET", "/api/v1/teams"): "administrator",
    ("POST", "/api/v1/teams"): "administrator",
    ("DELETE", "/api/v1/teams/{name}"): "administrator",
    ("PUT", "/api/v1/teams/{name}/members/{member}"): "administrator",
    ("DELETE", "/api/v1/teams/{name}/members/{member}"): "administrator",
    ("GET", "/api/v1/robots"): "administrator",
    ("POST", "/api/v1/robots"): "administrator",
    ("DELETE", "/api/v1/robots/{name}"): "administrator",
    ("GET", "/api/v1/tokens"): "login",
    ("POST", "/api/v1/tokens"): "login",
    ("DELETE", "/api/v1/tokens/{id}"): "login",
    ("GET", "/api/v1/permissions"): "administrator",
    ("POST", "/api/v1/permissions"): "administrator",
    ("DELETE", "/api/v1/permissions"): "administrator",
    ("GET", "/api/v1/namespaces"): "login",
    ("POST", "/api/v1/namespaces"): "administrator",
    ("DELETE", "/api/v1/namespaces/{name}"): "administrator",
    ("GET", "/api/v1/namespaces/{name}/lifecycle"): "login",
    ("PUT", "/api/v1/namespaces/{name}/lifecycle"): "administrator",
    ("PUT", "/api/v1/access/visibility/{name}"): "admin",
    ("GET", "/api/v1/audit"): "auditor",
    ("GET", "/api/v1/audit/export"): "auditor",
    ("GET", "/api/v1/audit/verify"): "auditor",
    ("GET", "/api/v1/clusters"): "login",
    ("POST", "/api/v1/clusters/{cluster}/inventory"): "cluster-reporter",
    ("GET", "/api/v1/clusters/{cluster}/workloads"): "login",
    ("POST", "/api/v1/mirrors"): "admin",  # admin on the body's "destination" (see _body)
    ("GET", "/api/v1/mirrors"): "login",  # lists only mirrors whose destination the caller administers
    ("GET", "/api/v1/mirrors/{id}"): "login",  # 404 unless admin on its destination
    ("PATCH", "/api/v1/mirrors/{id}"): "login",
    ("DELETE", "/api/v1/mirrors/{id}"): "login",
    ("POST", "/api/v1/mirrors/{id}/run"): "login",
    ("GET", "/api/v1/mirrors/{id}/runs"): "login",
    # portal: refusals are a login redirect (anonymous) or the not-found page
    ("GET", "/"): "login",
    ("GET", "/login"): "public",
    ("POST", "/login"): "public",
    ("POST", "/logout"): "public",
    ("GET", "/repositories/{name}/images/{digest}"): "pull-login",
    ("GET", "/repositories/{name}"): "pull-login",
    ("POST", "/repositories/{name}/tags/{tag}/restore"): "push-login",
    ("GET", "/events"): "login",
    ("GET", "/advisories"): "login",
    ("GET", "/static/portal.css"): "public",
    ("GET", "/static/portal.js"): "public",
    ("GET", "/catalog"): "login",
    ("GET", "/advisories/{advisory}"): "login",
    ("GET", "/advisory"): "login",
    # portal forms (CSRF pair sent, so authorization decides), declared like their API twins
    ("POST", "/repositories/{name}/images/{digest}/promote"): "reviewer+pull-login",
    ("POST", "/repositories/{name}/images/{digest}/vex"): "reviewer+pull-login",
    ("GET", "/admin/robots"): "administrator-login",
    ("POST", "/admin/robots"): "administrator-login",
    ("POST", "/admin/robots/{robot}/revoke"): "administrator-login",
    ("GET", "/admin/access"): "administrator-login",
    ("POST", "/admin/users"): "administrator-login",
    ("POST", "/admin/users/{user}/disabled"): "administrator-login",
    ("POST", "/admin/teams"): "administrator-login",
    ("POST", "/admin/teams/{team}/members"): "administrator-login",
    ("POST", "/admin/permissions"): "administrator-login",
    ("GET", "/admin/audit"): "auditor-login",
    # mirrors like /api/v1/mirrors: a login, then only mirrors whose destination one administers
    ("GET", "/admin/mirrors"): "login",
    ("GET", "/admin/mirrors/{id}"): "login",
    ("POST", "/admin/mirrors/{id}/run"): "login",
}
PORTAL_KINDS = ("login", "pull-login", "push-login", "reviewer+pull-login", "administrator-login", "auditor-login")
# The registry (/v2 goes through one dispatcher; its guard maps each registry route to an action).
REGISTRY: list[tuple[str, str, str]] = [
    ("GET", "/v2/{name}/tags/list", "pull"),
    ("GET", "/v2/{name}/manifests/latest", "pull"),
    ("HEAD", "/v2/{name}/manifests/latest", "pull"),
    ("GET", "/v2/{name}/blobs/" + DIGEST, "pull"),
    ("GET", "/v2/{name}/referrers/" + DIGEST, "pull"),
    ("PUT", "/v2/{name}/manifests/latest", "push"),
    ("POST", "/v2/{name}/blobs/uploads/", "push"),
    ("DELETE", "/v2/{name}/manifests/" + DIGEST, "delete"),
    ("DELETE", "/v2/{name}/blobs/" + DIGEST, "delete"),
]

CALLERS = [
    "anonymous",
    "nogrant",
    "puller",
    "pusher",
    "owner",
    "reviewer",
    "auditor",
    "reporter",
    "robot_in",
    "robot_out",
    "admin",
]
PASSWORD = "matrix-Secret-123456"
# Which callers meet each kind of need on a corp/... repository (none of them is public).
ALLOWED: dict[str, set[str]] = {
    "public": set(CALLERS),
    "anyone": set(CALLERS),
    "login": set(CALLERS) - {"anonymous"},
    "administrator": {"admin"},
    "auditor": {"admin", "auditor"},
    "reviewer": {"admin", "reviewer"},
    "reviewer+pull": {"admin", "reviewer"},
    "reviewer|auditor": {"admin", "reviewer", "auditor"},
    "cluster-reporter": {"admin", "reporter"},
    "pull": {"admin", "puller", "pusher", "owner", "reviewer", "robot_in"},
    "pull-login": {"admin", "puller", "pusher", "owner", "reviewer", "robot_in"},
    "push-login": {"admin", "pusher", "owner", "robot_in"},
    "reviewer+pull-login": {"admin", "reviewer"},
    "administrator-login": {"admin"},
    "auditor-login": {"admin", "auditor"},
    "push": {"admin", "pusher", "owner", "robot_in"},
    "delete": {"admin", "owner"},
    "admin": {"admin", "owner"},
}


def canonical(r: web.AbstractRoute) -> str:
    assert r.resource is not None
    return re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", r.resource.canonical)


def _seed(data: Path) -> dict[str, str]:
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    tokens: dict[str, str] = {}
    roles = {
        "admin": ["administrator"],
        "reviewer": ["security_reviewer"],
        "auditor": ["auditor"],
        "reporter": ["cluster_reporter"],
    }
    for user in ("admin", "nogrant", "puller", "pusher", "owner", "reviewer", "auditor", "reporter"):
        svc.add_user("test", user, PASSWORD, roles.get(user, []))
        tokens[user] = svc.create_token("test", user, "matrix", None, 1)[1]
    svc.grant("test", "principal", "puller", "namespace", "corp", "read")
    svc.grant("test", "principal", "reviewer", "namespace", "corp", "read")
    svc.grant("test", "principal", "pusher", "namespace", "corp", "write")
    svc.grant("test", "principal", "owner", "namespace", "corp", "admin")
    tokens["robot_in"] = svc.create_robot("test", "bot-in", ["repository:corp/*:pull,push"], 1)[1]
    tokens["robot_out"] = svc.create_robot("test", "bot-out", ["repository:other/*:pull,push"], 1)[1]
    svc.audit.flush()
    engine.dispose()
    return tokens


@pytest.fixture(scope="module")
def matrix_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    data = tmp_path_factory.mktemp("matrix") / "data"
    data.mkdir()
    tokens = _seed(data)
    srv = Server(data, access=True).start()
    try:
        with httpx.Client(base_url=srv.url, auth=("admin", PASSWORD), timeout=30) as c:
            for repo in REPOS:
                push_image(c, repo, "latest")
        yield srv, tokens
    finally:
        srv.stop()


def _app(tmp_path: Path) -> web.Application:
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")})
    return build_app(Hallmark.open(cfg))


def test_every_route_declares_its_need(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert undeclared(app) == []
    routed = {(r.method, canonical(r)) for r in app.router.routes() if r.method != "HEAD"}
    routed.discard(("*", "/v2"))
    routed.discard(("*", "/v2/{tail}"))
    # Every route has an expectation here, and every expectation a route (OIDC routes are off here).
    assert routed == set(EXPECTED)


def test_undeclared_route_is_found(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="no declaration")

    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="declared")

    app.router.add_get("/api/v1/sneaky", sneaky)
    app.router.add_routes([route("GET", "/api/v1/fine", fine, PUBLIC)])
    assert sorted(undeclared(app)) == ["GET /api/v1/sneaky", "HEAD /api/v1/sneaky"]


def _fill(path: str, repo: str) -> str:
    return (
        path.replace("{name}/images", f"{repo}/images")
        .replace("/repositories/{name}", f"/repositories/{repo}")
        .replace("visibility/{name}", f"visibility/{repo}")
        .replace("/v2/{name}", f"/v2/{repo}")
        .replace("{name}", "ghost")
        .replace("{digest}", DIGEST)
        .replace("{kind}", "vulnerabilities")
        .replace("{id}", "999999")
        .replace("{member}", "ghost")
        .replace("{tag}", "latest")
        .replace("{cluster}", "ghost")
        .replace("{robot}", "ghost")
        .replace("{team}", "ghost")
        .replace("{user}", "ghost")
        .replace("{advisory}", "CVE-2020-0001")
    )


def _body(method: str, path: str) -> dict[str, object] | None:
    if method not in ("POST", "PUT", "PATCH", "DELETE"):
        return None
    if path.endswith("/visibility/{name}"):
        return {"public": False}
    if path.endswith("/advisories/update"):
        return {"mirror": "/nonexistent/mirror"}
    if path == "/api/v1/mirrors":  # the destination repository is in the body
        return {"destination": REPOS[0], "unexpected": True}
    if path == "/api/v1/provenance":  # names its repository in the body, not the path
        return {"image": f"{REPOS[0]}@{DIGEST}", "unexpected": True}
    return {"unexpected": True}  # refused by the body schema (400) once authorized: changes nothing


def _refused(resp: httpx.Response, kind: str) -> bool:
    portal = not resp.request.url.path.startswith(("/api/", "/v2", "/auth"))
    if kind in PORTAL_KINDS and portal:
        if resp.status_code == 303:
            return "/login" in resp.headers.get("location", "")
        return resp.status_code == 404 and "may not read it" in resp.text
    return resp.status_code in (401, 403)


def test_authorization_matrix(matrix_site: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = matrix_site
    failures: list[str] = []
    cases: list[tuple[str, str, str]] = [(m, p, k) for (m, p), k in EXPECTED.items()] + REGISTRY
    for caller in CALLERS:
        headers = {"Authorization": f"Bearer {tokens[caller]}"} if caller in tokens else {}
        with httpx.Client(base_url=srv.url, headers=headers, timeout=30, follow_redirects=False) as c:
            for method, path, kind in cases:
                repo_route = "{name}" in path and (
                    "/repositories/" in path or "/visibility/" in path or path.startswith("/v2/")
                )
                if path in ("/login", "/logout", "/auth/token") and method == "POST":
                    continue  # public forms with their own checks (CSRF, grant type), covered elsewhere
                for repo in REPOS if repo_route else ["-"]:
                    url = _fill(path, repo)
                    body = _body(method, path)
                    if kind in PORTAL_KINDS and method == "POST":  # a valid CSRF pair: authorization decides
                        form = {"csrf": "c" * 43, "digest": DIGEST}
                        resp = c.post(url, data=form, headers={"Cookie": "hallmark_csrf=" + "c" * 43})
                    elif path.startswith("/v2/") and method == "PUT":
                        resp = c.put(url, content=b"{}", headers={"Content-Type": "application/json"})
                    else:
                        resp = c.request(method, url, json=body)
                    refused = _refused(resp, kind)
                    allowed = caller in ALLOWED[kind]
                    if refused == allowed:
                        failures.append(f"{caller:10} {method:6} {url} -> {resp.status_code} (needs {kind})")
    assert not failures, "\n".join(failures)


def test_patch_repository_with_images_segment_is_refused_and_unknown_names_are_not_created(
    matrix_site: tuple[Server, dict[str, str]],
) -> None:
    srv, tokens = matrix_site
    r = httpx.patch(srv.url + "/api/v1/repositories/corp/images/base", json={"immutable_tags": True})
    assert r.status_code == 401
    r = httpx.patch(srv.url + "/api/v1/repositories/never/images/made", json={"immutable_tags": True})
    assert r.status_code == 401
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    r = httpx.patch(srv.url + "/api/v1/repositories/never/images/made", json={"immutable_tags": True}, headers=admin)
    assert r.status_code == 404
    listed = httpx.get(srv.url + "/api/v1/repositories", headers=admin).json()["repositories"]
    assert "never/images/made" not in listed
    r = httpx.patch(srv.url + "/api/v1/repositories/corp/images/base", json={"immutable_tags": True}, headers=admin)
    assert r.status_code == 200 and r.json()["immutable_tags"] is True
    audit = httpx.get(srv.url + "/api/v1/audit", params={"action": "repository.update"}, headers=admin).json()
    assert [e["repository"] for e in audit["entries"]] == ["corp/images/base"]
