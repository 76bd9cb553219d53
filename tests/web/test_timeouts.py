"""Slow clients on a real server: trickled request heads and bodies are cut, and a cut upload
never becomes a blob. Short timeouts come from the environment; the assertions are about
whether the server closed the connection, with a generous cap on how long the test waits."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server
from tests.ocihelp import sha256

MIB = 1 << 20
STEP = 0.25  # seconds between trickled bytes
GIVE_UP = 30.0  # far beyond every timeout configured below


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("slow") / "data"
    data.mkdir()
    env = {
        "HALLMARK_SERVER__HEADER_TIMEOUT_SECONDS": "1",
        "HALLMARK_SERVER__BODY_TIMEOUT_SECONDS": "2",
        "HALLMARK_SERVER__BODY_MIN_RATE_BYTES_PER_SECOND": "1000",
        "HALLMARK_SERVER__IDLE_TIMEOUT_SECONDS": "120",
    }
    srv = Server(data, env=env).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def trickle(sock: socket.socket, data: bytes) -> tuple[bool, bytes]:
    """Send ``data`` one byte per STEP; (whether the server closed the connection, what it sent)."""
    received = b""
    sock.settimeout(STEP)
    deadline = time.monotonic() + GIVE_UP
    for i in range(len(data)):
        if time.monotonic() > deadline:
            return False, received
        try:
            sock.send(data[i : i + 1])
        except OSError:  # reset or broken pipe: closed
            return True, received
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def upload_files(server: Server) -> list[str]:
    root = server.data_dir / "blobs" / "uploads"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_trickled_request_head_is_cut(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        closed, got = trickle(s, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400)
    assert closed
    assert got.startswith(b"HTTP/1.1 408")


def test_silent_connection_is_closed(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(GIVE_UP)
        assert s.recv(100) == b""


def test_trickled_head_on_kept_alive_connection_is_cut(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
        s.settimeout(10)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        closed, got = trickle(s, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400)
    assert closed
    assert got.startswith(b"HTTP/1.1 408")


def _post_head(server: Server, path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Length: {length}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def test_trickled_body_is_cut_and_stores_nothing(server: Server, client: httpx.Client) -> None:
    data = secrets.token_bytes(4000)
    digest = sha256(data)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(_post_head(server, f"/v2/slow/small/blobs/uploads/?digest={digest}", len(data)) + data[:100])
        closed, got = trickle(s, data[100:])
    assert closed
    assert got.startswith(b"HTTP/1.1 408")
    assert client.head(f"/v2/slow/small/blobs/{digest}").status_code == 404
    assert upload_files(server) == []
    # The same push at a normal pace, with pauses shorter than the window, goes through.
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(_post_head(server, f"/v2/slow/small/blobs/uploads/?digest={digest}", len(data)))
        for i in range(0, len(data), 1000):
            time.sleep(0.3)
            s.sendall(data[i : i + 1000])
        s.settimeout(10)
        assert s.recv(65536).startswith(b"HTTP/1.1 201")
    assert client.get(f"/v2/slow/small/blobs/{digest}").content == data


def test_large_body_read_off_the_socket_is_cut_too(server: Server, client: httpx.Client) -> None:
    data = secrets.token_bytes(16 * MIB)
    digest = sha256(data)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(_post_head(server, f"/v2/slow/large/blobs/uploads/?digest={digest}", len(data)) + data[: 9 * MIB])
        closed, got = trickle(s, data[9 * MIB :])
    assert closed
    assert got.startswith(b"HTTP/1.1 408")
    assert client.head(f"/v2/slow/large/blobs/{digest}").status_code == 404


def test_trickled_chunk_does_not_become_a_blob(server: Server, client: httpx.Client) -> None:
    data = secrets.token_bytes(3000)
    digest = sha256(data)
    loc = client.post("/v2/slow/chunked/blobs/uploads/").headers["Location"]
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        head = (
            f"PUT {loc}?digest={digest} HTTP/1.1\r\nHost: {server.host}\r\nContent-Length: {len(data)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        s.sendall(head + data[:50])
        closed, got = trickle(s, data[50:])
    assert closed
    assert got.startswith(b"HTTP/1.1 408")
    assert client.head(f"/v2/slow/chunked/blobs/{digest}").status_code == 404
