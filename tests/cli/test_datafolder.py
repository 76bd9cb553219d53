"""The data folder records its database; commands use it or refuse, never a fresh SQLite file beside it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from hallmark.config import load_config
from hallmark.metadata.datafolder import RECORD, write_record
from tests.cli.clirun import hallmark
from tests.conftest import PostgresServer, Server, free_port


def test_server_on_postgres_records_it_and_commands_follow(postgres: PostgresServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = postgres.create_db(f"df{free_port()}")
    srv = Server(data, url).start()
    try:
        assert httpx.get(srv.url + "/healthz").status_code == 200
    finally:
        srv.stop()
    rec = json.loads((data / RECORD).read_text())
    assert rec["dialect"] == "postgresql" and rec["database"] == url.rsplit("/", 1)[1]
    assert rec["password"] is False
    # With the URL: a user in PostgreSQL. Without it: the same database, found through the record.
    added = hallmark(data, "user", "add", "alice", env={"HALLMARK_DATABASE_URL": url})
    assert added.returncode == 0, added.stderr
    listed = hallmark(data, "user", "list")
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout
    assert not (data / "hallmark.db").exists()


def test_postgres_with_password_refuses_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_record(data, "postgresql+psycopg://hm:s3cret@db.example:5433/hallmark")
    assert "s3cret" not in (data / RECORD).read_text()
    for args in (["gc", "--dry-run"], ["db", "status"], ["user", "list"], ["catalog", "list"]):
        proc = hallmark(data, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.strip() == (
            "error: this data folder belongs to a PostgreSQL database at db.example:5433/hallmark; "
            "set HALLMARK_DATABASE_URL"
        )
    assert not (data / "hallmark.db").exists()


def test_sqlite_folder_refuses_another_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = hallmark(data, "user", "add", "bob")
    assert first.returncode == 0, first.stderr
    assert json.loads((data / RECORD).read_text())["url"] == "sqlite:///hallmark.db"
    other = hallmark(data, "user", "list", env={"HALLMARK_DATABASE_URL": "postgresql://pg.example/other"})
    assert other.returncode == 2
    assert "belongs to the sqlite database hallmark.db, not to postgresql pg.example/other" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_record_survives_a_moved_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert hallmark(data, "user", "add", "carol").returncode == 0
    moved = tmp_path / "moved"
    data.rename(moved)
    assert load_config(environ={"HALLMARK_DATA_DIR": str(moved)}).database_url == f"sqlite:///{moved / 'hallmark.db'}"
    listed = hallmark(moved, "user", "list")
    assert "carol" in listed.stdout


def test_folder_from_before_records_with_no_sqlite_file_refuses(tmp_path: Path) -> None:
    """A folder a PostgreSQL-backed server used before records existed: blobs and keys, no hallmark.db."""
    data = tmp_path / "data"
    (data / "registry").mkdir(parents=True)
    (data / "registry" / "upload-session-key").write_bytes(b"k" * 32)
    proc = hallmark(data, "gc", "--dry-run")
    assert proc.returncode == 2
    assert "used by a server on another database" in proc.stderr
    assert not (data / "hallmark.db").exists()
