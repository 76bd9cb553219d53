"""Observability on real ``hallmark serve`` processes: /metrics, /readyz, JSON logs, request ids.

One server with access control, two workers, JSON logs and a separate metrics listener covers the
metrics, log and request-id contracts; /readyz is checked against a PostgreSQL cluster and an S3
server that the tests stop under a running server.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PostgresServer, Server, free_port
from tests.s3help import shared_moto

REQUESTS = 20


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int, tuple[str, str]]]:
    data = tmp_path_factory.mktemp("observe") / "data"
    data.mkdir()
    metrics_port = free_port()
    env = {
        "HALLMARK_SERVER__WORKERS": "2",
        "HALLMARK_SERVER__LOG_FORMAT": "json",
        "HALLMARK_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "HALLMARK_PIPELINE__ENABLED": "false",
    }
    srv = Server(data, env=env, access=True).start()
    admin = ("admin", (data / "initial-admin-password").read_text().strip())
    try:
        yield srv, metrics_port, admin
    finally:
        srv.stop()


def _log_lines(srv: Server) -> list[dict[str, object]]:
    text = (srv.data_dir.parent / f"server-{srv.port}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _sample(body: str, name: str, **labels: str) -> float | None:
    for line in body.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_add_up_all_workers_on_the_separate_listener(site: tuple[Server, int, tuple[str, str]]) -> None:
    srv, metrics_port, _ = site
    for _ in range(REQUESTS):  # one connection each, so both workers answer some
        assert httpx.get(srv.url + "/healthz").status_code == 200
    for _ in range(3):  # whichever worker answers the scrape, it reports every worker's requests
        body = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert _sample(body, "hallmark_http_requests_total", method="GET", route="/healthz", status="200") == REQUESTS
        assert _sample(body, "hallmark_http_request_duration_seconds_count", route="/healthz") == REQUESTS
    # state read from the database at scrape time
    assert "hallmark_upload_sessions 0.0" in body
    assert "# TYPE hallmark_jobs gauge" in body
    assert "# TYPE hallmark_http_request_duration_seconds histogram" in body


def test_metrics_label_routes_by_template_never_by_repository(site: tuple[Server, int, tuple[str, str]]) -> None:
    srv, metrics_port, admin = site
    digest = "sha256:" + "ab" * 32
    with httpx.Client(base_url=srv.url, auth=admin) as c:
        for i in range(3):
            c.get(f"/v2/team/secret-project-{i}/blobs/{digest}")
            c.get(f"/api/v1/repositories/team/secret-project-{i}")
        c.put("/v2/team/secret-project/manifests/latest", content=b"x" * 1000)
        assert c.post("/api/v1/gc", params={"grace_seconds": "0"}).status_code == 200
    body = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert "secret-project" not in body and digest not in body
    assert _sample(body, "hallmark_http_requests_total", route="/v2/{name}/blobs/{digest}") is not None
    assert _sample(body, "hallmark_http_request_bytes_total", route="/v2/{name}/manifests/{ref}") == 1000
    assert _sample(body, "hallmark_gc_runs_total", result="ok") == 1


def test_metrics_on_the_main_port_need_an_administrator(site: tuple[Server, int, tuple[str, str]]) -> None:
    srv, _, admin = site
    assert httpx.get(srv.url + "/metrics").status_code == 401
    r = httpx.get(srv.url + "/metrics", auth=admin)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "hallmark_http_requests_total" in r.text


def test_request_id_is_answered_logged_and_audited(site: tuple[Server, int, tuple[str, str]]) -> None:
    srv, _, admin = site
    password = "Observed-Secret-42424242"
    with httpx.Client(base_url=srv.url, auth=admin) as c:
        r = c.post(
            "/api/v1/users",
            json={"name": "olivia", "password": password, "roles": []},
            headers={"X-Request-Id": "req-observe-1"},
        )
        assert r.status_code == 201, r.text
        assert r.headers["X-Request-Id"] == "req-observe-1"
        # a malformed id is replaced, never echoed or logged
        bad = c.get("/healthz", headers={"X-Request-Id": 'evil id {"x":1}'})
        assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-Id"])
        generated = c.get("/healthz").headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated) and generated != bad.headers["X-Request-Id"]
        rows = c.get("/api/v1/audit", params={"action": "user.create"}).json()["entries"]
        created = [e for e in rows if (e.get("detail") or {}).get("user") == "olivia"]
        assert created and created[0]["detail"]["request_id"] == "req-observe-1"
        assert c.get("/api/v1/audit/verify").json()["ok"] is True
    lines = _log_lines(srv)
    access = [x for x in lines if x.get("logger") == "hallmark.access" and x.get("request_id") == "req-observe-1"]
    assert len(access) == 1
    line = access[0]
    assert line["method"] == "POST" and line["route"] == "/api/v1/users" and line["status"] == 201
    assert isinstance(line["duration_ms"], float) and {"ts", "level", "message"} <= line.keys()
    log_text = (srv.data_dir.parent / f"server-{srv.port}.log").read_text()
    assert password not in log_text and "evil id" not in log_text


class Forwarder:
    """A TCP relay to a local port that the test can cut (refused connections, open ones dropped):
    a database or object store that went away, without stopping the shared test servers."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> Forwarder:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
            self.listener.close()
            self.listener = None
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns = []


def test_readyz_names_the_database_or_storage_that_went_away(postgres: PostgresServer, tmp_path: Path) -> None:
    """One server on PostgreSQL and S3, each reached through a relay the test cuts and restores."""
    moto = shared_moto(Path(tempfile.gettempdir()))
    env = moto.env(moto.new_bucket())
    db = Forwarder(postgres.port).start()
    s3 = Forwarder(int(env["HALLMARK_STORAGE__ENDPOINT"].rsplit(":", 1)[1])).start()
    env["HALLMARK_STORAGE__ENDPOINT"] = f"http://127.0.0.1:{s3.port}"
    db_name = f"readyz{free_port()}"
    postgres.create_db(db_name)
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data, f"postgresql+psycopg://postgres@127.0.0.1:{db.port}/{db_name}", env=env).start()
    try:
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 200 and r.json() == {
            "status": "ok",
            "failed": [],
            "checks": {"database": {"status": "ok"}, "storage": {"status": "ok"}},
        }
        db.stop()
        r = httpx.get(srv.url + "/readyz", timeout=30)
        assert r.status_code == 503
        assert r.json()["failed"] == ["database"] and r.json()["checks"]["storage"]["status"] == "ok"
        assert "database" in r.json()["checks"]["database"]["error"]
        assert httpx.get(srv.url + "/healthz").status_code == 200  # liveness: the process itself is fine
        db.start()
        s3.stop()
        r = httpx.get(srv.url + "/readyz", timeout=30)
        assert r.status_code == 503
        assert r.json()["failed"] == ["storage"]
        assert env["HALLMARK_STORAGE__SECRET_KEY"] not in r.text and "127.0.0.1" not in r.text
        s3.start()
        assert httpx.get(srv.url + "/readyz", timeout=30).status_code == 200
    finally:
        srv.stop()
        db.stop()
        s3.stop()


def test_scrape_reports_pipeline_durations_and_database_state(tmp_path: Path) -> None:
    """In-process (as in `hallmark worker`): a job run by the pipeline feeds its histogram; queue, GC and
    advisory state come from the database at scrape time."""
    import datetime as dt

    from sqlalchemy import insert

    from hallmark import metrics
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.lifecycle.tables import scheduled_jobs
    from hallmark.pipeline.tables import advisory_sets

    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    try:
        before = _sample(metrics.scrape(hm.meta).decode(), "hallmark_index_duration_seconds_count", result="ok") or 0
        hm.pipeline.handlers["index"] = lambda payload: None

        def failing_match(payload: dict[str, Any]) -> None:
            raise ZeroDivisionError("division by zero")

        hm.pipeline.handlers["match"] = failing_match
        hm.pipeline.jobs.enqueue("index", "a@sha256:1", {})
        hm.pipeline.jobs.enqueue("match", "a@sha256:1", {})
        hm.pipeline.jobs.enqueue("provenance", "a@sha256:1", {})
        assert hm.pipeline.run_one("t", ["index"]) and hm.pipeline.run_one("t", ["match"])
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        with hm.meta.transaction() as conn:
            conn.execute(
                insert(advisory_sets).values(blob_digest="sha256:0", sources="{}", active=True, created_at=long_ago)
            )
            conn.execute(
                insert(scheduled_jobs).values(
                    name="gc", next_run_at=long_ago, last_finished_at=long_ago, last_status="ok"
                )
            )
        port = free_port()
        metrics.serve_in_thread(f"127.0.0.1:{port}", hm.meta)  # what `hallmark worker --metrics-listen` serves
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        hm.close()
    assert _sample(body, "hallmark_index_duration_seconds_count", lane="shared", result="ok") == before + 1
    assert (_sample(body, "hallmark_match_duration_seconds_count", result="failed") or 0) >= 1
    assert _sample(body, "hallmark_jobs", kind="provenance", state="queued") == 1
    assert _sample(body, "hallmark_jobs", kind="match", state="queued") == 1  # failed once: retried later
    line = next(x for x in body.splitlines() if x.startswith("hallmark_advisory_set_age_seconds "))
    assert 7000 < float(line.split()[1]) < 7400
    assert _sample(body, "hallmark_gc_last_run_timestamp_seconds", status="ok") == pytest.approx(long_ago.timestamp())


def test_metrics_false_serves_no_metrics_route(tmp_path: Path) -> None:
    from hallmark.app import Hallmark, build_app
    from hallmark.config import load_config

    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data"), "HALLMARK_ACCESS__ENABLED": "false"}
    hm = Hallmark.open(load_config(environ=env))
    try:
        for enabled in (True, False):
            hm.config.server.metrics = enabled
            paths = {getattr(r.resource, "canonical", None) for r in build_app(hm).router.routes()}
            assert ("/metrics" in paths) is enabled and "/readyz" in paths
    finally:
        hm.close()


def test_access_log_false_drops_access_lines_only(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from hallmark import logs

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        for enabled in (True, False):
            logs.setup("json", access_log=enabled)
            token = logs.REQUEST_ID.set("rid-1")
            try:
                logging.getLogger("hallmark.access").info("GET / 200")
                logging.getLogger("hallmark.registry").error("disk full")
            finally:
                logs.REQUEST_ID.reset(token)
            lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
            assert [x["logger"] for x in lines] == ["hallmark.access", "hallmark.registry"][(0 if enabled else 1) :]
            assert all(x["request_id"] == "rid-1" for x in lines)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("hallmark.access").setLevel(logging.NOTSET)
