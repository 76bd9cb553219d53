"""GET /api/v1/explore and ``hallmark explore`` on a real server (SQLite and PostgreSQL): the same
rows as the query, table/JSON/CSV output, the data folder and --server, bad input, the roles."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from hallmark.access.service import AccessService
from hallmark.config import load_config
from hallmark.explore.filters import parse_filters
from hallmark.explore.query import explore
from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore
from tests.conftest import Server
from tests.explore.graph import D1, D5, SHOP, build


def db_url(server: Server) -> str:
    return server.db_url or load_config(environ={"HALLMARK_DATA_DIR": str(server.data_dir)}).database_url


@pytest.fixture(scope="module")
def site(server: Server) -> Iterator[tuple[Server, MetadataStore]]:
    engine = make_engine(db_url(server), 2)
    meta = MetadataStore(engine)
    build(meta)
    yield server, meta
    engine.dispose()


def cli(server: Server, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"HALLMARK_DATA_DIR": str(server.data_dir), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    if server.db_url:
        environ["HALLMARK_DATABASE_URL"] = server.db_url
    return subprocess.run(
        [sys.executable, "-m", "hallmark", "explore", *args],
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_api_answers_the_query_rows(site: tuple[Server, MetadataStore]) -> None:
    srv, meta = site
    for params in (
        {"exposed": "true", "severity": "critical"},
        {"cve": "CVE-2024-0002"},
        {"source_repo": SHOP, "view": "images", "running": "true"},
        {"package": "openssl@<3.0.7", "grade": "D,E,F", "limit": "1"},
    ):
        r = httpx.get(srv.url + "/api/v1/explore", params=params, timeout=30)
        assert r.status_code == 200, r.text
        expected = json.loads(json.dumps(explore(meta, parse_filters(params)), default=str))
        assert r.json() == expected
    page = httpx.get(srv.url + "/api/v1/explore?exposed=true&severity=critical", timeout=30).json()
    assert [(row["workload"]["cluster"], row["image"]["digest"]) for row in page["rows"]] == [
        ("dev", D5),
        ("prod", D1),
        ("staging", D1),
    ]
    assert page["filters"] == {
        "exposed": True,
        "severity": "critical",
        "include_suppressed": False,
        "view": "workloads",
        "limit": 100,
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("severity=urgent", "severity: expected critical, high, medium or low, got 'urgent'"),
        ("exposed=yes-please", "exposed: expected true or false, got 'yes-please'"),
        ("package=openssl@~3", "package: bad version constraint '~3'"),
        ("grade=G", "grade: unknown grade 'G'"),
        ("limit=5000", "limit: expected a number from 1 to 1000"),
        ("severity=high&severity=low", "severity: given twice"),
        ("colour=red", "colour: unknown parameter"),
    ],
)
def test_api_bad_filters_are_400_with_the_reason(site: tuple[Server, MetadataStore], query: str, message: str) -> None:
    r = httpx.get(site[0].url + "/api/v1/explore?" + query, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "INVALID_FILTER" and err["message"].startswith(message), err


def test_cli_outputs_on_the_data_folder(site: tuple[Server, MetadataStore]) -> None:
    srv, meta = site
    r = cli(srv, "--exposed", "--severity", "critical", "--output", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == json.loads(
        json.dumps(explore(meta, parse_filters({"exposed": "true", "severity": "critical"})), default=str)
    )
    r = cli(srv, "--exposed", "--severity", "critical", "-o", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["cluster"], x["workload"], x["image"]) for x in rows] == [
        ("dev", "db", f"legacy/app@{D5}"),
        ("prod", "web", f"shop/web@{D1}"),
        ("staging", "web", f"shop/web@{D1}"),
    ]
    prod = rows[1]
    assert prod["findings"] == "CVE-2024-0001(critical openssl 3.0.2-1 KEV fix)"
    assert prod["source_repo"] == SHOP and prod["commit"] == "b" * 40 and prod["verified"] == "true"
    assert prod["run_url"].endswith("/runs/42") and prod["owner"] == "storefront" and prod["grade"] == "D"
    assert prod["exposure"] == "shop.example/ -> svc/web:80" and prod["kev"] == "true"
    assert rows[2]["exposure"] == "LoadBalancer svc/web:443"
    r = cli(srv, "--images", "--source-repo", "acme/shop", "--not-running", "-o", "csv")
    assert [x["image"] for x in csv.DictReader(io.StringIO(r.stdout))] == ["shop/web@sha256:" + "4" * 64]
    r = cli(srv, "--cve", "CVE-2024-0002", "--cluster", "prod", COLUMNS="300")
    assert r.returncode == 0, r.stderr
    table = r.stdout
    short = "shop/web@sha256:" + "1" * 12
    for text in ("prod/shop/Deployment/web", "prod/shop/Deployment/api", "DSA-5555-1", "storefront", short):
        assert text in table, table
    assert "staging/" not in table


def test_cli_pages_with_the_cursor(site: tuple[Server, MetadataStore]) -> None:
    srv, _ = site
    every = json.loads(cli(srv, "-o", "json").stdout)["rows"]
    first = json.loads(cli(srv, "--limit", "2", "-o", "json").stdout)
    assert first["rows"] == every[:2] and first["next_cursor"]
    second = json.loads(cli(srv, "--limit", "2", "--cursor", first["next_cursor"], "-o", "json").stdout)
    assert second["rows"] == every[2:4]
    table = cli(srv, "--limit", "2")
    assert table.returncode == 0 and table.stderr.startswith("more rows: --cursor ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--severity", "urgent"], "error: severity: expected critical, high, medium or low, got 'urgent'"),
        (["--package", "x@>"], "error: package: bad version constraint '>'"),
        (["--grade", "Q"], "error: grade: unknown grade 'Q'"),
        (["--running"], "error: running: only with view=images"),
        (["--output", "xml"], "error: --output: expected table, json or csv, got 'xml'"),
        (["--token-stdin"], "error: --token-stdin needs --server"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    site: tuple[Server, MetadataStore], args: list[str], message: str
) -> None:
    r = cli(site[0], *args)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_asks_a_server(site: tuple[Server, MetadataStore]) -> None:
    srv, meta = site
    r = cli(srv, "--server", srv.url, "--cve", "DSA-5555-1", "-o", "json", HALLMARK_DATA_DIR="/nonexistent")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(
        json.dumps(explore(meta, parse_filters({"cve": "DSA-5555-1"})), default=str)
    )
    r = cli(srv, "--server", "http://127.0.0.1:9", "--cve", "DSA-5555-1")
    assert r.returncode == 2 and r.stderr.startswith("error: http://127.0.0.1:9: ")


# -- who may ask --------------------------------------------------------------------------------------

PASSWORD = "explore-Secret-123456"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    data = tmp_path_factory.mktemp("explore-access") / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    tokens = {}
    for user, roles in (("admin", ["administrator"]), ("reviewer", ["security_reviewer"]), ("auditor", ["auditor"]),
                        ("dev", [])):  # fmt: skip
        svc.add_user("test", user, PASSWORD, roles)
        tokens[user] = svc.create_token("test", user, "explore", None, 1)[1]
    svc.grant("test", "principal", "dev", "namespace", "shop", "admin")  # owns the repositories, no role
    svc.audit.flush()
    build(MetadataStore(engine))
    engine.dispose()
    srv = Server(data, access=True).start()
    try:
        yield srv, tokens
    finally:
        srv.stop()


def test_only_reviewers_auditors_and_administrators_may_explore(guarded: tuple[Server, dict[str, str]]) -> None:
    srv, tokens = guarded
    url = srv.url + "/api/v1/explore?exposed=true&severity=critical"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {tokens['dev']}"}, timeout=30).status_code == 403
    for user in ("admin", "reviewer", "auditor"):
        r = httpx.get(url, headers={"Authorization": f"Bearer {tokens[user]}"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["rows"]) == 3, (user, r.text)
    # the CLI with a token from the environment or stdin
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HALLMARK_DATA_DIR": str(srv.data_dir)}
    base = [sys.executable, "-m", "hallmark", "explore", "--server", srv.url, "--kev", "-o", "json"]
    proc = subprocess.run(base, env=env | {"HALLMARK_TOKEN": tokens["auditor"]}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert {row["image"]["digest"] for row in json.loads(proc.stdout)["rows"]} == {D1}
    proc = subprocess.run([*base, "--token-stdin"], env=env, input=tokens["dev"] + "\n", capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {srv.url} answered 403: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
