"""Shared fixtures: a real ``hallmark serve`` on a free port, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hallmark.storage import BlobStore, FilesystemBlobStore

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
# "s3": servers started by these fixtures keep blobs in a bucket on a moto server (tests/s3help.py).
TEST_STORAGE = os.environ.get("HALLMARK_TEST_STORAGE", "filesystem")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "postgres").exists():
            return base
    return None


class PostgresServer:
    """A throw-away PostgreSQL cluster in a temp dir (run as the postgres user when we are root)."""

    def __init__(self, root: Path) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries not found (Debian package postgresql)")
        self.bin: Path = bin_dir
        self.root = root
        self.port = free_port()
        self.datadir = root / "pgdata"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            root.mkdir(parents=True, exist_ok=True)
            shutil.chown(root, "postgres")
        self.log = root / "pg.log"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True)

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start_server()
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "hallmark")

    def start_server(self) -> None:
        """Start the (initialised) cluster; also after :meth:`stop`, on the same port."""
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.log),
            "-w",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            "start",
        )

    def url(self, db: str = "hallmark") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"],
            capture_output=True,
        )


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    root = Path("/tmp") / f"hallmark-pg-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    srv = PostgresServer(root)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


class Server:
    """A running ``hallmark serve`` subprocess."""

    def __init__(
        self, data_dir: Path, db_url: str | None = None, env: dict[str, str] | None = None, access: bool = False
    ) -> None:
        self.data_dir = data_dir
        # Access control is on by default in Hallmark; suites that do not test it run without credentials.
        self.access = access
        self.db_url = db_url
        self.extra_env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.s3_env: dict[str, str] = {}

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Server:
        env = {**os.environ, "HALLMARK_DATA_DIR": str(self.data_dir)}
        if not self.access:
            env["HALLMARK_ACCESS__ENABLED"] = "false"
        if TEST_STORAGE == "s3" and "HALLMARK_STORAGE__DRIVER" not in self.extra_env:
            # The S3 run of the suite (make test-s3): every server stores its blobs in its own bucket.
            from tests.s3help import shared_moto

            if not self.s3_env:
                moto = shared_moto(Path(tempfile.gettempdir()))
                self.s3_env = moto.env(moto.new_bucket())
            env.update(self.s3_env)
        env.update(self.extra_env)
        if self.db_url:
            env["HALLMARK_DATABASE_URL"] = self.db_url
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hallmark", "serve", "--listen", self.host],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir.parent / f'server-{self.port}.log').read_text()}")
            try:
                if httpx.get(self.url + "/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def blob_store(self) -> BlobStore:
        """The server's blob store, opened from the test (a folder, or the bucket on the S3 run)."""
        e = {**self.s3_env, **self.extra_env}
        if e.get("HALLMARK_STORAGE__DRIVER") == "s3":
            from hallmark.storage.s3 import S3BlobStore

            return S3BlobStore(
                e["HALLMARK_STORAGE__BUCKET"],
                endpoint=e["HALLMARK_STORAGE__ENDPOINT"],
                path_style=True,
                access_key=e["HALLMARK_STORAGE__ACCESS_KEY"],
                secret_key=e["HALLMARK_STORAGE__SECRET_KEY"],
            )
        return FilesystemBlobStore(self.data_dir / "blobs")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("hallmark") / "data"
    data.mkdir()
    db_url = None
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = pg.create_db(f"t{free_port()}")
    srv = Server(data, db_url).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
