"""A real ``hallmark serve`` with access control on, pre-seeded with users, a robot and grants."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from hallmark.access.service import AccessService
from hallmark.config import load_config
from hallmark.metadata.db import make_engine, migrate
from tests.conftest import PostgresServer, Server, free_port

PASSWORDS = {
    "admin": "admin-Secret-123456",
    "alice": "alice-Secret-654321",
    "bob": "bob-Secret-987654",
    "audra": "audra-Secret-111111",
}


@dataclass
class Site:
    server: Server
    passwords: dict[str, str]
    robot_token: str
    robot_token_id: str
    secrets: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.server.data_dir.parent / f"server-{self.server.port}.log"

    def token(self, user: str | None, *scopes: str) -> str:
        auth = (user, self.passwords.get(user, self.robot_token)) if user else None
        r = httpx.get(self.server.url + "/auth/token", params={"service": "hallmark", "scope": list(scopes)}, auth=auth)
        assert r.status_code == 200, r.text
        tok: str = r.json()["token"]
        self.secrets.append(tok)
        return tok

    def client(self, user: str | None = None, *scopes: str, basic: bool = False) -> httpx.Client:
        headers = {}
        auth = None
        if user and basic:
            auth = (user, self.passwords.get(user, self.robot_token))
        elif user or scopes:
            headers["Authorization"] = f"Bearer {self.token(user, *scopes)}"
        return httpx.Client(base_url=self.server.url, headers=headers, auth=auth, timeout=30)


def seed(data_dir: Path, db_url: str | None) -> tuple[str, str]:
    """Users, grants and a robot written before the server starts (so no bootstrap password is printed)."""
    env = {"HALLMARK_DATA_DIR": str(data_dir)}
    if db_url:
        env["HALLMARK_DATABASE_URL"] = db_url
    cfg = load_config(environ=env)
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    svc.add_user("test", "admin", PASSWORDS["admin"], ["administrator"])
    svc.add_user("test", "alice", PASSWORDS["alice"])
    svc.add_user("test", "bob", PASSWORDS["bob"])
    svc.add_user("test", "audra", PASSWORDS["audra"], ["auditor"])
    svc.grant("test", "principal", "alice", "namespace", "team-a", "write")
    svc.grant("test", "principal", "alice", "namespace", "pub", "write")
    svc.create_team("test", "readers")
    svc.set_membership("test", "readers", "bob", True)
    svc.grant("test", "team", "readers", "repository", "team-a/app", "read")
    svc.set_public("test", "pub/app", True)
    tid, token = svc.create_robot("test", "ci-bot", ["repository:team-a/*:pull,push"], 1)
    svc.audit.flush()
    engine.dispose()
    return tid, token


@pytest.fixture(scope="module")
def site(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("access") / "data"
    data.mkdir()
    db_url = None
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = pg.create_db(f"a{free_port()}")
    tid, token = seed(data, db_url)
    srv = Server(data, db_url, access=True).start()
    s = Site(srv, dict(PASSWORDS), token, tid, secrets=[*PASSWORDS.values(), token])
    s.passwords["ci-bot"] = token
    try:
        yield s
    finally:
        srv.stop()


def access_service(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, env: dict[str, str] | None = None
) -> Iterator[AccessService]:
    """An AccessService on a migrated SQLite file or a fresh PostgreSQL database (``backend``),
    with ``env`` added to the configuration's environment; for ``yield from`` in a fixture."""
    environ = {"HALLMARK_DATA_DIR": str(tmp_path / "data"), **(env or {})}
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        environ["HALLMARK_DATABASE_URL"] = pg.create_db(f"as{free_port()}")
    cfg = load_config(environ=environ)
    engine = make_engine(cfg.database_url, 4)
    migrate(engine)
    try:
        yield AccessService(cfg, engine)
    finally:
        engine.dispose()
