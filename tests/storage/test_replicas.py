"""Two ``hallmark serve`` replicas, each with its own data folder, on one PostgreSQL and one bucket.

What a replica used to keep per data folder or per process (the token-signing key, the upload
session key, failed-login counters) now lives in the database, so the two behave as one
registry: a token issued by one works on the other, an upload moves between them, a revocation,
a disabled user or a removed grant on one is refused by the other at once, failed logins count
on both, and pushes and deletes are seen everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.access.conftest import PASSWORDS, seed
from tests.conftest import PostgresServer, Server, free_port
from tests.ocihelp import push_image, sha256
from tests.s3help import shared_moto

MiB = 1 << 20
PULL_PUSH = "repository:team-a/app:pull,push"


@pytest.fixture(scope="module")
def replicas(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    root = tmp_path_factory.mktemp("replicas")
    db_url = postgres.create_db(f"r{free_port()}")
    moto = shared_moto(Path(tempfile.gettempdir()))
    env = {
        **moto.env(moto.new_bucket()),
        "HALLMARK_PIPELINE__ENABLED": "false",
        "HALLMARK_ACCESS__MAX_FAILED_PER_USER": "3",
    }
    folders = [root / "a" / "data", root / "b" / "data"]
    for f in folders:
        f.mkdir(parents=True)
    seed(folders[0], db_url)
    servers = [Server(f, db_url, env=env, access=True) for f in folders]
    try:
        for s in servers:
            s.start()
        yield servers[0], servers[1]
    finally:
        for s in servers:
            s.stop()


def token(server: Server, user: str, password: str, *scopes: str) -> str:
    r = httpx.get(
        server.url + "/auth/token", params={"service": "hallmark", "scope": list(scopes)}, auth=(user, password)
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def bearer(server: Server, tok: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok}"}, timeout=60)


def admin(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=("admin", PASSWORDS["admin"]), timeout=60)


def test_a_token_from_one_replica_works_on_the_other_and_a_push_is_pulled_there(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    tok = token(a, "alice", PASSWORDS["alice"], PULL_PUSH)
    with bearer(b, tok) as on_b, bearer(a, tok) as on_a:
        digest = push_image(on_b, "team-a/app", "v1")  # A's token, accepted by B
        r = on_a.get("/v2/team-a/app/manifests/v1")
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
        for layer in json.loads(r.content)["layers"]:
            blob = on_a.get(f"/v2/team-a/app/blobs/{layer['digest']}")
            assert blob.status_code == 200 and sha256(blob.content) == layer["digest"]
    for s in (a, b):  # nothing of the kind is kept in a data folder any more
        assert not (s.data_dir / "access" / "token-signing-key.pem").exists()
        assert not (s.data_dir / "registry" / "upload-session-key").exists()
        assert not (s.data_dir / "blobs").exists()


def test_a_chunked_upload_started_on_one_replica_finishes_on_the_other(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    tok = token(b, "alice", PASSWORDS["alice"], PULL_PUSH)
    chunks = [os.urandom(1000), os.urandom(5 * MiB + 3), os.urandom(700)]
    data = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with bearer(a, tok) as on_a, bearer(b, tok) as on_b:
        loc = on_a.post("/v2/team-a/app/blobs/uploads/").headers["Location"]
        offset = 0
        for c, chunk in zip((on_a, on_b), chunks[:2], strict=True):
            end = offset + len(chunk) - 1
            r = c.patch(loc, content=chunk, headers={"Content-Range": f"{offset}-{end}"})
            assert r.status_code == 202 and r.headers["Range"] == f"0-{end}", r.text
            offset += len(chunk)
        assert on_a.get(loc).headers["Range"] == f"0-{offset - 1}"
        assert on_b.put(loc, params={"digest": digest}, content=chunks[2]).status_code == 201
        assert on_a.get(f"/v2/team-a/app/blobs/{digest}").content == data


def test_revocations_on_one_replica_are_refused_at_once_by_the_other(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    manifest = "/v2/team-a/app/manifests/v1"
    with admin(a) as adm:
        r = adm.post("/api/v1/robots", json={"name": "rep-bot", "scopes": ["repository:team-a/*:pull"]})
        assert r.status_code == 201, r.text
        robot_tid, robot_token = r.json()["token_id"], r.json()["token"]
        for name in ("carol", "dave"):
            body = {"name": name, "password": f"{name}-Secret-123456"}
            assert adm.post("/api/v1/users", json=body).status_code == 201
            grant = {"subject": name, "scope_kind": "repository", "scope": "team-a/app", "role": "read"}
            assert adm.post("/api/v1/permissions", json=grant).status_code in (200, 201)
        with httpx.Client(base_url=b.url, auth=("carol", "carol-Secret-123456"), timeout=60) as carol_basic:
            robot_jwt = token(b, "rep-bot", robot_token, "repository:team-a/app:pull")
            carol_jwt = token(a, "carol", "carol-Secret-123456", "repository:team-a/app:pull")
            dave_jwt = token(a, "dave", "dave-Secret-123456", "repository:team-a/app:pull")
            for tok in (robot_jwt, robot_token, carol_jwt, dave_jwt):
                with bearer(b, tok) as c:
                    assert c.get(manifest).status_code == 200
            assert carol_basic.get(manifest).status_code == 200

            # A grant removed on A: B's next Basic-authenticated request is refused.
            grant = {"subject": "carol", "scope_kind": "repository", "scope": "team-a/app", "role": "read"}
            assert adm.request("DELETE", "/api/v1/permissions", json=grant).status_code in (200, 204)
            assert carol_basic.get(manifest).status_code in (401, 403, 404)
            # A token revoked on A: B refuses it and the JWT obtained with it.
            assert adm.delete(f"/api/v1/tokens/{robot_tid}").status_code in (200, 204)
            for tok in (robot_token, robot_jwt):
                with bearer(b, tok) as c:
                    assert c.get(manifest).status_code == 401
            # A user disabled on A, another deleted on A: B refuses their JWTs.
            assert adm.patch("/api/v1/users/carol", json={"disabled": True}).status_code == 200
            assert adm.delete("/api/v1/users/dave").status_code in (200, 204)
            for tok in (carol_jwt, dave_jwt):
                with bearer(b, tok) as c:
                    assert c.get(manifest).status_code == 401


def test_failed_logins_on_one_replica_count_on_the_other(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    transport = httpx.HTTPTransport(local_address="127.0.0.9")  # a client address of its own
    with httpx.Client(transport=transport, timeout=60) as c:
        for server in (a, b, a):  # max_failed_per_user = 3, spread over both replicas
            r = c.get(server.url + "/auth/token", auth=("bob", "wrong-password"))
            assert r.status_code == 401
        for server in (b, a):  # even the right password waits now, on either replica
            r = c.get(server.url + "/auth/token", auth=("bob", PASSWORDS["bob"]))
            assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_a_delete_on_one_replica_is_a_404_on_the_other(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    with admin(a) as on_a, admin(b) as on_b:
        digest = push_image(on_a, "team-a/gone", "v1")
        assert on_b.get(f"/v2/team-a/gone/manifests/{digest}").status_code == 200
        assert on_a.delete(f"/v2/team-a/gone/manifests/{digest}").status_code == 202
        assert on_b.get(f"/v2/team-a/gone/manifests/{digest}").status_code == 404
        assert on_b.get("/v2/team-a/gone/manifests/v1").status_code == 404


def test_the_audit_chain_both_replicas_appended_to_verifies(replicas: tuple[Server, Server]) -> None:
    """Both wrote entries (logins, pushes, account changes) into one hash chain; it holds from either."""
    for server in replicas:
        with admin(server) as c:
            r = c.get("/api/v1/audit/verify")
            assert r.status_code == 200 and r.json()["ok"] is True, r.text
            assert r.json()["checked"] > 20


def test_a_replica_with_its_own_blob_folder_says_so_when_it_starts(
    replicas: tuple[Server, Server], tmp_path: Path
) -> None:
    """The new user's mistake: a third server on the same database, blobs in its own data folder."""
    a, _ = replicas
    data = tmp_path / "data"
    data.mkdir()
    env = {"HALLMARK_PIPELINE__ENABLED": "false", "HALLMARK_STORAGE__DRIVER": "filesystem"}
    lonely = Server(data, a.db_url, env=env, access=True).start()
    try:
        log = (tmp_path / f"server-{lonely.port}.log").read_text()
        assert "the blob store holds none of the 3 newest blobs the database records" in log
    finally:
        lonely.stop()
    for s in replicas:  # the replicas sharing the bucket did not warn
        assert "blob store holds none" not in (s.data_dir.parent / f"server-{s.port}.log").read_text()


def test_gc_on_one_replica_while_the_other_takes_pushes_loses_nothing(replicas: tuple[Server, Server]) -> None:
    """Collection with a one-second grace period runs non-stop on B while A takes pushes whose
    shared layer keeps becoming unreferenced (most images are deleted once the next is in): a push
    may be refused (the client retries), but every manifest A accepted and kept has all its blobs,
    on both replicas."""
    import threading
    import time

    from tests.ocihelp import image, push_blob, push_manifest, tar_layer

    a, b = replicas
    shared = tar_layer({"base.txt": b"the same base layer in every image" * 1000})
    stop = threading.Event()
    runs: list[int] = []
    errors: list[str] = []

    def collect() -> None:
        with admin(b) as on_b:
            while not stop.is_set():
                r = on_b.post("/api/v1/gc", params={"grace_seconds": "1"})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                    return
                runs.append(len(r.json()["deleted"]))

    gc = threading.Thread(target=collect)
    gc.start()
    kept: list[tuple[str, list[bytes]]] = []
    try:
        with admin(a) as on_a:
            previous: str | None = None
            previous_stays = True
            for i in range(12):
                time.sleep(0.4)  # the deleted image's blobs age past the grace period
                layers = [shared, tar_layer({"own.txt": f"image {i}".encode()})]
                config, manifest = image(layers)
                for blob in (*layers, config):
                    push_blob(on_a, "team-a/gc", blob)
                r = push_manifest(on_a, "team-a/gc", f"v{i}", manifest)
                if r.status_code != 201:  # a blob collected between its upload and the manifest
                    assert r.status_code == 400 and "BLOB_UNKNOWN" in r.text, r.text
                    continue
                digest = sha256(manifest)
                if previous is not None and not previous_stays:  # its layers now only in the new image
                    assert on_a.delete(f"/v2/team-a/gc/manifests/{previous}").status_code == 202
                    kept.pop()
                kept.append((digest, [*layers, config]))
                previous, previous_stays = digest, i % 3 == 0
    finally:
        stop.set()
        gc.join(60)
    assert not errors
    assert runs and sum(runs) > 0, "collection never removed anything: the race was not exercised"
    assert len(kept) >= 3
    for server in (a, b):
        with admin(server) as c:
            for digest, blobs in kept:
                assert c.get(f"/v2/team-a/gc/manifests/{digest}").status_code == 200
                for blob in blobs:
                    r = c.get(f"/v2/team-a/gc/blobs/{sha256(blob)}")
                    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha256(blob)[7:]
