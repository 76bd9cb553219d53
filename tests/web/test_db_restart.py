"""PostgreSQL restarting under load: requests that meet it fail cleanly (503, the API's error body,
``Retry-After``), and the same ``hallmark serve`` process serves again once the database is back."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import PostgresServer, Server, free_port
from tests.ocihelp import image, push_manifest, sha256, tar_layer


class Pusher(threading.Thread):
    """Pushes small images in a loop (bounded) and keeps every answer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answers: list[httpx.Response] = []
        self.errors: list[Exception] = []

    def ok(self) -> int:
        return sum(1 for r in self.answers if r.status_code in (201, 202))

    def failed(self) -> list[httpx.Response]:
        return [r for r in self.answers if r.status_code >= 500]

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            for i in range(2000):
                if self.stop.is_set():
                    return
                layer = tar_layer({f"f{i}": os.urandom(64)})
                config, manifest = image([layer])
                try:
                    for blob in (layer, config):
                        r = c.post("/v2/restart/app/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
                        self.answers.append(r)
                        if r.status_code != 201:
                            break
                    else:
                        self.answers.append(push_manifest(c, "restart/app", f"v{i}", manifest))
                except httpx.HTTPError as exc:  # a connection the server closed: counted, never hidden
                    self.errors.append(exc)


def wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen")


def test_postgres_restart_under_pushes(postgres: PostgresServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data, postgres.create_db(f"t{free_port()}"), env={"HALLMARK_PIPELINE__ENABLED": "false"}).start()
    pusher = Pusher(srv.url)
    try:
        pusher.start()
        wait(lambda: pusher.ok() >= 5, "pushes before the restart")
        postgres.stop()
        try:
            wait(lambda: len(pusher.failed()) >= 3, "pushes failing while the database is down")
            r = httpx.get(srv.url + "/api/v1/repositories", timeout=30)  # the API's own error body
            assert r.status_code == 503 and r.headers["Retry-After"], r.text
            assert r.json()["error"]["code"] == "UNAVAILABLE"
        finally:
            postgres.start_server()
        before = len(pusher.answers)
        wait(lambda: sum(1 for r in pusher.answers[before:] if r.status_code == 201) >= 5, "pushes after the restart")
        pusher.stop.set()
        pusher.join(30)
        assert srv.proc is not None and srv.proc.poll() is None  # the same process, never restarted
        for r in pusher.failed():
            assert r.status_code == 503 and r.headers["Retry-After"], r.text
            (err,) = r.json()["errors"]
            assert err["code"] == "UNAVAILABLE" and "database is unavailable" in err["message"]
            assert "Traceback" not in r.text and "postgres" not in r.text.lower()
        assert not pusher.errors, pusher.errors
        # Once the database answers again, so does everything else (the pool replaced dead connections).
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/v2/restart/app/tags/list").status_code == 200
            r = c.get("/api/v1/repositories")
            assert r.status_code == 200, r.text
    finally:
        pusher.stop.set()
        srv.stop()
