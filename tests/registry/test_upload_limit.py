"""Open uploads are limited per principal: sessions holding data plus uploads in progress."""

from __future__ import annotations

import base64
import secrets
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.access.conftest import PASSWORDS, seed
from tests.conftest import PostgresServer, Server, free_port
from tests.ocihelp import sha256

LIMIT = 3
MIB = 1 << 20


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("uplimit") / "data"
    data.mkdir()
    db_url = None
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = pg.create_db(f"ul{free_port()}")
    _, token = seed(data, db_url)
    (data.parent / "robot-token").write_text(token)
    env = {"HALLMARK_REGISTRY__MAX_OPEN_UPLOADS_PER_PRINCIPAL": str(LIMIT)}
    srv = Server(data, db_url, env=env, access=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def seed_token(server: Server) -> str:
    return (server.data_dir.parent / "robot-token").read_text()


def client(server: Server, user: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(user, PASSWORDS[user]), timeout=30)


def open_session(c: httpx.Client, repo: str) -> httpx.Response:
    """POST a session and PATCH a first chunk into it."""
    loc = c.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    return c.patch(loc, content=b"x" * 100, headers={"Content-Range": "0-99"})


def refused(r: httpx.Response) -> bool:
    return r.status_code == 429 and r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"


def test_open_uploads_are_limited_per_principal(server: Server) -> None:
    repo = "team-a/limited"
    data = secrets.token_bytes(1000)
    with client(server, "alice") as alice, client(server, "admin") as admin:
        sessions = []
        for _ in range(LIMIT):
            r = open_session(alice, repo)
            assert r.status_code == 202, r.text
            sessions.append(r.headers["Location"])
        # Over the limit: a new session's first data, a one-request push, a POST+PUT push.
        assert refused(open_session(alice, repo))
        assert refused(alice.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data))
        loc = alice.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        assert refused(alice.put(loc, params={"digest": sha256(data)}, content=data))
        assert alice.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
        # Adding to and finishing the sessions already open is fine.
        r = alice.patch(sessions[0], content=b"y" * 50, headers={"Content-Range": "100-149"})
        assert r.status_code == 202
        done = b"x" * 100 + b"y" * 50 + b"z"
        r = alice.put(r.headers["Location"], params={"digest": sha256(done)}, content=b"z")
        assert r.status_code == 201, r.text
        # One finished: room for one more. Cancelling frees a place too.
        assert open_session(alice, repo).status_code == 202
        assert refused(open_session(alice, repo))
        assert alice.delete(sessions[1]).status_code == 204
        r = alice.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
        assert r.status_code == 201, r.text
        # Another principal is not affected.
        r = admin.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(b"admin")}, content=b"admin")
        assert r.status_code == 201, r.text
        assert open_session(admin, repo).status_code == 202


def test_an_upload_cut_short_still_counts_as_open(server: Server) -> None:
    repo = "team-a/cut"
    token = seed_token(server)
    with httpx.Client(base_url=server.url, auth=("ci-bot", token), timeout=30) as bot:
        for _ in range(LIMIT - 1):
            assert open_session(bot, repo).status_code == 202
        # The client goes away halfway through the first chunk of another session (a large one:
        # what aiohttp still buffers when the connection drops is lost, 8 MiB pieces reach the disk).
        loc = bot.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        auth = base64.b64encode(f"ci-bot:{token}".encode()).decode()
        head = (
            f"PATCH {loc} HTTP/1.1\r\nHost: {server.host}\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Length: {20 * MIB}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(head + b"x" * (10 * MIB))
        # What reached the disk is kept (the session can resume from it) and the session counts.
        deadline = time.monotonic() + 30
        while bot.get(loc).headers["Range"] == "0-0" and time.monotonic() < deadline:
            time.sleep(0.1)
        kept = int(bot.get(loc).headers["Range"].split("-")[1]) + 1
        assert kept >= 8 * MIB
        assert refused(open_session(bot, repo))
        r = bot.patch(loc, content=b"y" * 1000, headers={"Content-Range": f"{kept}-{kept + 999}"})
        assert r.status_code == 202 and r.headers["Range"] == f"0-{kept + 999}"
