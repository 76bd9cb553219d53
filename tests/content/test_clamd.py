"""ClamAV through clamd's INSTREAM protocol: against a real clamd (Debian ``clamav-daemon``)
with a signature database built here from the EICAR string, when clamd is installed; and
always against a small in-test server that speaks the same protocol."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hallmark.content import ClamdClient, ClamdConfig, ClamdError, ContentScanner, RuleBundle, ScanOptions

from .conftest import eicar


class FakeClamd:
    """Accepts zPING / zINSTREAM, decodes the length-prefixed chunks and records them."""

    def __init__(self, path: Path, reply: bytes | None = None) -> None:
        self.path = path
        self.reply = reply
        self.streams: list[list[int]] = []  # chunk sizes per INSTREAM
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_exact(self, conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("short read")
            buf += chunk
        return buf

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                self._handle(conn)
            except (ConnectionError, OSError):
                pass  # the client gave up mid-stream (e.g. its own size limit)
            finally:
                conn.close()

    def _handle(self, conn: socket.socket) -> None:
        cmd = b""
        while not cmd.endswith(b"\0"):
            cmd += self._read_exact(conn, 1)
        if cmd == b"zPING\0":
            conn.sendall(b"PONG\0")
            return
        assert cmd == b"zINSTREAM\0"
        sizes: list[int] = []
        data = b""
        while True:
            (n,) = struct.unpack("!L", self._read_exact(conn, 4))
            if n == 0:
                break
            sizes.append(n)
            data += self._read_exact(conn, n)
        self.streams.append(sizes)
        if self.reply is not None:
            conn.sendall(self.reply)
        elif b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE" in data:
            conn.sendall(b"stream: Eicar-Test-Signature FOUND\0")
        else:
            conn.sendall(b"stream: OK\0")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_clamd(tmp_path: Path) -> Iterator[FakeClamd]:
    server = FakeClamd(tmp_path / "fake.sock")
    yield server
    server.close()


def test_instream_framing_and_verdicts(fake_clamd: FakeClamd) -> None:
    client = ClamdClient(ClamdConfig(str(fake_clamd.path), chunk_size=16))
    assert client.ping()
    assert client.instream(b"x" * 40) is None
    assert fake_clamd.streams[-1] == [16, 16, 8]
    assert client.instream([eicar()[:30], eicar()[30:]]) == "Eicar-Test-Signature"


def test_error_replies_and_limits(tmp_path: Path) -> None:
    server = FakeClamd(tmp_path / "err.sock", reply=b"INSTREAM size limit exceeded. ERROR\0")
    try:
        with pytest.raises(ClamdError, match="size limit"):
            ClamdClient(ClamdConfig(str(server.path))).instream(b"abc")
        with pytest.raises(ClamdError, match="longer than"):
            ClamdClient(ClamdConfig(str(server.path), max_stream_bytes=10)).instream(b"x" * 11)
    finally:
        server.close()
    with pytest.raises(ClamdError, match="cannot connect"):
        ClamdClient(ClamdConfig(str(tmp_path / "missing.sock"))).instream(b"x")
    assert not ClamdClient(ClamdConfig(str(tmp_path / "missing.sock"))).ping()


def test_scanner_uses_clamd_and_records_failures(rules: RuleBundle, fake_clamd: FakeClamd, tmp_path: Path) -> None:
    s = ContentScanner(rules, ScanOptions(clamd=ClamdConfig(str(fake_clamd.path))))
    out = s.scan_file("tmp/e.com", 0, "d", eicar())
    assert sorted((f.engine, f.rule_id) for f in out.findings) == [
        ("clamav", "Eicar-Test-Signature"),
        ("yara", "Hallmark_EICAR_Test_File"),
    ]
    down = ContentScanner(rules, ScanOptions(clamd=ClamdConfig(str(tmp_path / "down.sock"))))
    out = down.scan_file("tmp/e.com", 0, "d", eicar())
    assert [f.engine for f in out.findings] == ["yara"]
    assert [(k.scanner, k.reason) for k in out.skipped] == [("clamav", "clamd-error")]


@pytest.fixture(scope="module")
def real_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    clamd = shutil.which("clamd") or (shutil.which("clamd", path="/usr/sbin:/sbin"))
    if clamd is None:
        pytest.skip("clamd not installed (Debian package clamav-daemon)")
    root = tmp_path_factory.mktemp("clamd")
    (root / "db").mkdir()
    # Body signature: name:target-type(0=any):offset(*=anywhere):hex, built from EICAR here.
    (root / "db" / "hallmark-test.ndb").write_text(f"Hallmark.Test.EICAR:0:*:{eicar().hex()}\n")
    sock = root / "clamd.sock"
    (root / "clamd.conf").write_text(
        f"Foreground yes\nLocalSocket {sock}\nDatabaseDirectory {root / 'db'}\n"
        f"LogFile {root / 'clamd.log'}\nTemporaryDirectory {root}\nStreamMaxLength 10M\n"
    )
    proc = subprocess.Popen([clamd, "-c", str(root / "clamd.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = ClamdClient(ClamdConfig(str(sock), timeout=5))
        for _ in range(600):  # readiness wait, bounded (clamd loads its database first)
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.skip(f"clamd exited with {proc.returncode}: {err[-500:]}")
            if sock.exists() and client.ping():
                break
            time.sleep(0.1)
        else:
            pytest.fail("clamd did not answer PING")
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_real_clamd_detects_eicar_file_and_zip(real_clamd: Path, rules: RuleBundle) -> None:
    import io
    import zipfile

    client = ClamdClient(ClamdConfig(str(real_clamd)))
    assert client.instream(b"just some text\n") is None
    assert client.instream(eicar()) == "Hallmark.Test.EICAR.UNOFFICIAL"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("dir/eicar.txt", eicar())
    s = ContentScanner(rules, ScanOptions(clamd=ClamdConfig(str(real_clamd))))
    out = s.scan_file("app/bundle.zip", 0, "d", buf.getvalue())
    assert sorted((f.engine, f.path) for f in out.findings) == [
        ("clamav", "/app/bundle.zip"),
        ("yara", "/app/bundle.zip!/dir/eicar.txt"),
    ]
