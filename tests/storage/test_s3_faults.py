"""S3 faults seen through a real ``hallmark serve``: throttling and stalls are retried with backoff, then
answered 503 UNAVAILABLE with a clear message, and never leave a blob half visible; a missing bucket or
refused credentials fail the start with one line and exit code 2.

Between Hallmark and moto's server (its own process) sits a small TCP proxy that passes requests
through, answers them ``503 SlowDown`` as a throttling S3 server does, or holds them unanswered (a
stalled server). Requests that pass are answered by moto itself.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, free_port
from tests.s3help import ACCESS_KEY, SECRET_KEY, MotoServer, shared_moto

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FaultProxy:
    """One request per connection: passed to the upstream, refused with 503 SlowDown, or held."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.throttle = False  # answer every request 503 SlowDown
        self.throttle_next = 0  # answer the next N requests 503 SlowDown
        self.stall = False  # never answer (until switched off)
        self.throttled = 0
        self.closed = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, _, body = head.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
            length = int(headers.get(b"content-length", b"0"))
            expect = headers.get(b"expect", b"").lower() == b"100-continue"
            with self.lock:
                if self.throttle or self.throttle_next > 0:
                    self.throttle_next = max(0, self.throttle_next - 1)
                    self.throttled += 1
                    action = "throttle"
                else:
                    action = "stall" if self.stall else "pass"
            if action == "stall":
                deadline = time.monotonic() + 30
                while self.stall and time.monotonic() < deadline:
                    time.sleep(0.05)
                return
            if action == "throttle":
                if not expect:  # read what was sent, so that the answer is not lost to a reset
                    self._read_body(conn, body, length)
                conn.sendall(
                    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                    + f"Content-Length: {len(SLOWDOWN)}\r\n\r\n".encode()
                    + SLOWDOWN
                )
                return
            if expect:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self._read_body(conn, body, length)
            kept = [
                line for line in lines[1:] if not line.lower().startswith((b"expect:", b"connection:", b"keep-alive:"))
            ]
            request = b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n" + body
            with socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                up.sendall(request)
                while chunk := up.recv(65536):
                    conn.sendall(chunk)

    @staticmethod
    def _read_body(conn: socket.socket, body: bytes, length: int) -> bytes:
        while len(body) < length:
            chunk = conn.recv(min(65536, length - len(body)))
            if not chunk:
                break
            body += chunk
        return body


@pytest.fixture(scope="module")
def moto() -> MotoServer:
    return shared_moto(Path(tempfile.gettempdir()))


@pytest.fixture(scope="module")
def proxied(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, FaultProxy]]:
    proxy = FaultProxy(moto.port)
    data = tmp_path_factory.mktemp("s3faults") / "data"
    data.mkdir()
    env = {
        **moto.env(moto.new_bucket()),
        "HALLMARK_STORAGE__ENDPOINT": proxy.endpoint,
        "HALLMARK_STORAGE__MAX_ATTEMPTS": "2",
        "HALLMARK_STORAGE__TIMEOUT_SECONDS": "1",
        "HALLMARK_PIPELINE__ENABLED": "false",
    }
    srv = Server(data, env=env).start()
    yield srv, proxy
    srv.stop()
    proxy.close()


def post_blob(c: httpx.Client, data: bytes) -> httpx.Response:
    return c.post("/v2/faults/app/blobs/uploads/", params={"digest": sha256(data)}, content=data)


def test_throttling_is_retried_with_backoff(proxied: tuple[Server, FaultProxy]) -> None:
    srv, proxy = proxied
    blob = os.urandom(4096)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        proxy.throttle_next = 1  # a throttling spell shorter than the retries
        assert post_blob(c, blob).status_code == 201
        assert proxy.throttled == 1
        assert c.get(f"/v2/faults/app/blobs/{sha256(blob)}").content == blob


@pytest.mark.parametrize("fault", ["throttle", "stall"])
def test_lasting_fault_is_a_clear_503_and_nothing_half_visible(proxied: tuple[Server, FaultProxy], fault: str) -> None:
    srv, proxy = proxied
    blob = os.urandom(6 << 20)  # more than one S3 part
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        start = c.post("/v2/faults/app/blobs/uploads/")
        assert start.status_code == 202
        location = start.headers["Location"]
        assert c.patch(location, content=blob[: 5 << 20]).status_code == 202
        setattr(proxy, fault, True)
        try:
            r = c.put(location, params={"digest": sha256(blob)}, content=blob[5 << 20 :])
        finally:
            setattr(proxy, fault, False)
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        (err,) = r.json()["errors"]
        assert err["code"] == "UNAVAILABLE"
        expected = "throttling" if fault == "throttle" else "unreachable"
        assert expected in err["message"] and SECRET_KEY not in r.text, err
        assert c.head(f"/v2/faults/app/blobs/{sha256(blob)}").status_code == 404
        # The client retries the same request: the session survived, the blob completes intact.
        assert c.put(location, params={"digest": sha256(blob)}, content=blob[5 << 20 :]).status_code == 201
        assert hashlib.sha256(c.get(f"/v2/faults/app/blobs/{sha256(blob)}").content).hexdigest() == sha256(blob)[7:]


def start_fails(data: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "HALLMARK_DATA_DIR": str(data), "HALLMARK_PIPELINE__ENABLED": "false"}
    listen = f"127.0.0.1:{free_port()}"
    return subprocess.run(
        [sys.executable, "-m", "hallmark", "serve", "--listen", listen],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_start_refuses_a_missing_bucket_and_bad_credentials(moto: MotoServer, tmp_path: Path) -> None:
    # A server that checks credentials (moto with authentication on), started meanwhile.
    strict = MotoServer(free_port(), tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    starting = threading.Thread(target=strict.start)
    starting.start()
    env = {**moto.env("hm-never-created"), "HALLMARK_STORAGE__MAX_ATTEMPTS": "1"}
    r = start_fails(tmp_path / "data", env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("hallmark: ") and "hm-never-created" in last and "does not exist" in last, last
    starting.join()
    try:  # the key is not known there
        env = {**strict.env("hm-bucket"), "HALLMARK_STORAGE__MAX_ATTEMPTS": "1"}
        r = start_fails(tmp_path / "data", env)
    finally:
        strict.stop()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("hallmark: ") and "InvalidAccessKeyId" in last, last
    assert ACCESS_KEY not in r.stderr and SECRET_KEY not in r.stderr
