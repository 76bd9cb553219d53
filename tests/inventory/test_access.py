"""Who may post an inventory and who sees which workloads, with access control on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from hallmark.access.service import AccessService
from hallmark.config import load_config
from hallmark.metadata.db import make_engine, migrate
from tests.conftest import Server
from tests.inventory.helpers import kubectl_list
from tests.inventory.test_api import post
from tests.ocihelp import push_image

PASSWORD = "inventory-Secret-123456"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    data = tmp_path_factory.mktemp("inv-access") / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    tokens: dict[str, str] = {}
    roles = {"admin": ["administrator"], "reporter": ["cluster_reporter"], "auditor": ["auditor"]}
    for user in ("admin", "reporter", "auditor", "dev", "nogrant"):
        svc.add_user("test", user, PASSWORD, roles.get(user, []))
        tokens[user] = svc.create_token("test", user, "t", None, 1)[1]
    svc.grant("test", "principal", "dev", "namespace", "shop", "read")
    # A robot for the in-cluster reporter: its scoped token carries no catalog role ...
    tokens["robot_scoped"] = svc.create_robot("test", "k8s-prod", ["repository:k8s-prod/*:pull"], 1)[1]
    # ... an unscoped one does, once the role is granted
    svc.grant("test", "principal", "k8s-prod", "catalog", "", "cluster_reporter")
    tokens["robot"] = svc.create_token("test", "k8s-prod", "inventory", None, 1)[1]
    svc.audit.flush()
    engine.dispose()
    srv = Server(data, access=True).start()
    try:
        with httpx.Client(base_url=srv.url, auth=("admin", PASSWORD), timeout=30) as c:
            for repo, tag in [("shop/web", "1.4"), ("shop/report", "nightly"), ("platform/agent", "3")]:
                push_image(c, repo, tag)
        yield srv, tokens
    finally:
        srv.stop()


def _client(srv: Server, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=30)


def test_who_may_post(site: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = site
    doc = kubectl_list(srv.host)
    expected = {
        None: 401,
        "nogrant": 403,
        "dev": 403,
        "auditor": 403,
        "robot_scoped": 403,
        "robot": 200,
        "reporter": 200,
        "admin": 200,
    }
    for who, status in expected.items():
        with _client(srv, tokens.get(who or "")) as c:
            r = post(c, "prod", doc, None)  # taken now: each accepted upload is newer
            assert r.status_code == status, (who, r.text)
    with _client(srv, tokens["admin"]) as c:
        entries = c.get("/api/v1/audit", params={"action": "cluster.inventory"}).json()["entries"]
    assert [e["actor"] for e in entries] == ["k8s-prod", "reporter", "admin"]
    assert entries[0]["detail"]["cluster"] == "prod" and entries[0]["detail"]["workloads"] == 7
    with _client(srv, tokens["admin"]) as c:
        (cluster,) = c.get("/api/v1/clusters").json()["clusters"]
    assert cluster["received_by"] == "admin"


def test_who_sees_which_workloads(site: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = site
    with _client(srv, tokens["reporter"]) as c:
        assert post(c, "seen", kubectl_list(srv.host), None).status_code == 200

    def names(who: str) -> list[tuple[str, list[str]]]:
        with _client(srv, tokens[who]) as c:
            r = c.get("/api/v1/clusters/seen/workloads")
            assert r.status_code == 200, r.text
            return [(w["name"], [i["container"] for i in w["images"]]) for w in r.json()["workloads"]]

    everything = names("auditor")
    assert [n for n, _ in everything] == ["report", "node-agent", "api", "web", "worker", "debug-shell", "db"]
    assert names("admin") == everything
    # read on shop/*: the workloads running shop images; of those, its own and outside images only
    # (shop/web-migrate and shop/worker are not in this Hallmark: no repository, nothing to hide)
    assert names("dev") == [("report", ["report"]), ("web", ["web", "migrate"])]
    assert names("nogrant") == []
    assert names("reporter") == []  # posting does not mean reading
    with _client(srv, tokens["nogrant"]) as c:
        clusters = {x["name"]: x for x in c.get("/api/v1/clusters").json()["clusters"]}
    assert clusters["seen"]["workloads"] == 7 and "skipped" not in clusters["seen"]
