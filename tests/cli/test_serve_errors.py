"""``hallmark serve`` start errors are one line and exit code 2, "serving" only once it serves; a second
start is quiet (no Alembic INFO chatter); the packaging metadata builds without deprecation warnings."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.licenses import canonicalize_license_expression
from packaging.requirements import Requirement

from tests.cli.clirun import hallmark
from tests.conftest import ROOT, PostgresServer, free_port


def serve(data: Path, listen: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A start expected to fail (a server that starts anyway is stopped by the timeout: a failure)."""
    return hallmark(data, "serve", "--listen", listen, env=env, timeout=90)


def assert_one_line(res: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "serving" not in res.stdout
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = serve(tmp_path / "data", f"127.0.0.1:{port}")
    line = assert_one_line(res)
    assert line == f"hallmark: cannot listen on 127.0.0.1:{port}: address already in use"


def test_unreachable_postgresql(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://hallmark:s3cret@127.0.0.1:{port}/hallmark"
    line = assert_one_line(
        serve(tmp_path / "data", f"127.0.0.1:{free_port()}", {"HALLMARK_DATABASE_URL": url}),
        "hallmark: cannot connect to the database",
        f"127.0.0.1:{port}",
        "Connection refused",
    )
    assert "s3cret" not in line


@pytest.mark.parametrize(
    "command", [["db", "status"], ["catalog", "list"], ["gc"], ["user", "list"], ["audit", "verify"]]
)
def test_other_commands_on_an_unreachable_database(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql://hallmark:s3cret@127.0.0.1:{free_port()}/hallmark"
    res = hallmark(tmp_path / "data", *command, env={"HALLMARK_DATABASE_URL": url}, timeout=90)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
    assert res.stderr.startswith("error: cannot connect to the database") and "s3cret" not in res.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@127.0.0.1:notaport/db", "malformed database URL"),
        ("nonsense", "malformed database URL"),
        ("mysqlx://u@127.0.0.1/db", "unsupported database URL"),
    ],
)
def test_malformed_database_url(tmp_path: Path, url: str, expected: str) -> None:
    res = serve(tmp_path / "data", f"127.0.0.1:{free_port()}", {"HALLMARK_DATABASE_URL": url})
    assert_one_line(res, expected)


@pytest.mark.postgres
def test_missing_database_and_role(postgres: PostgresServer, tmp_path: Path) -> None:
    res = serve(tmp_path / "a", f"127.0.0.1:{free_port()}", {"HALLMARK_DATABASE_URL": postgres.url("nosuchdb")})
    assert_one_line(res, 'database "nosuchdb" does not exist')
    url = f"postgresql://nobody@127.0.0.1:{postgres.port}/hallmark"
    res = serve(tmp_path / "b", f"127.0.0.1:{free_port()}", {"HALLMARK_DATABASE_URL": url})
    assert_one_line(res, 'role "nobody" does not exist')


class PasswordPostgres(PostgresServer):
    """A cluster that checks passwords (the shared fixture trusts every local connection)."""

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text("right-password\n")
        if self._as_user:
            shutil.chown(pwfile, "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.datadir),
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-U",
            "postgres",
            "--no-sync",
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.log),
            "-w",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[PasswordPostgres]:
    root = Path("/tmp") / f"hallmark-pgpw-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    try:
        srv = PasswordPostgres(root)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
def test_bad_password(password_postgres: PasswordPostgres, tmp_path: Path) -> None:
    url = f"postgresql://postgres:wrong-password@127.0.0.1:{password_postgres.port}/postgres"
    line = assert_one_line(
        serve(tmp_path / "data", f"127.0.0.1:{free_port()}", {"HALLMARK_DATABASE_URL": url}),
        "cannot connect to the database",
        'password authentication failed for user "postgres"',
    )
    assert "wrong-password" not in line


def start_and_stop(data: Path) -> tuple[str, str]:
    """Start a server, wait until it says it serves, stop it; (stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_")}
    env.update({"HALLMARK_DATA_DIR": str(data), "HALLMARK_PIPELINE__ENABLED": "false"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "hallmark", "serve", "--listen", f"127.0.0.1:{free_port()}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    out = ""
    deadline = time.monotonic() + 60
    while "Hallmark serving" not in out and time.monotonic() < deadline and proc.poll() is None:
        out += proc.stdout.readline()
    proc.terminate()
    rest, err = proc.communicate(timeout=30)
    assert "Hallmark serving" in out, err
    return out + rest, err


def test_second_start_is_quiet(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _, first = start_and_stop(data)
    assert "alembic" not in first
    assert sum("migrating the database schema" in line for line in first.splitlines()) == 1
    _, second = start_and_stop(data)
    assert "alembic" not in second and "migrating" not in second
    assert "Warning" not in second and "setuptools" not in second
    assert len([line for line in second.splitlines() if " INFO " in line or " WARNING " in line]) == 0, second


def test_packaging_metadata_uses_an_spdx_license() -> None:
    """setuptools >= 77 warns (~40 lines per build) about a ``project.license`` table."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    license_ = doc["project"]["license"]
    assert isinstance(license_, str) and canonicalize_license_expression(license_) == license_
    for pattern in doc["project"]["license-files"]:
        assert list(ROOT.glob(pattern)), pattern
    setuptools = next(Requirement(r) for r in doc["build-system"]["requires"] if r.startswith("setuptools"))
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")
