"""Minimal clamd client: PING and INSTREAM over a Unix or TCP socket.

Written by hand because the maintained Python client (``clamav-client``) is GPL-2.0, which
Hallmark (Apache-2.0) cannot ship, and the older ``clamd``/``pyclamd`` packages are
unmaintained; the protocol needed here is a few length-prefixed writes. Every read of the
reply is bounded and every socket operation has a timeout.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

MAX_REPLY = 4096


class ClamdError(Exception):
    """clamd was unreachable, refused the stream, or answered something unexpected."""


@dataclass(frozen=True, slots=True)
class ClamdConfig:
    """``address`` is a Unix socket path or ``tcp://host:port``."""

    address: str
    timeout: float = 60.0
    chunk_size: int = 256 * 1024
    max_stream_bytes: int = 25 * 1024 * 1024  # clamd's default StreamMaxLength


class ClamdClient:
    def __init__(self, config: ClamdConfig) -> None:
        self.config = config

    def _connect(self) -> socket.socket:
        addr = self.config.address
        try:
            if addr.startswith("tcp://"):
                host, _, port = addr.removeprefix("tcp://").rpartition(":")
                sock = socket.create_connection((host.strip("[]"), int(port)), timeout=self.config.timeout)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.config.timeout)
                sock.connect(addr)
        except (OSError, ValueError) as exc:
            raise ClamdError(f"cannot connect to clamd at {addr}: {exc}") from exc
        return sock

    @staticmethod
    def _reply(sock: socket.socket) -> str:
        buf = b""
        while b"\0" not in buf and len(buf) < MAX_REPLY:
            chunk = sock.recv(MAX_REPLY - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf.split(b"\0", 1)[0].decode("utf-8", "replace").strip()

    def ping(self) -> bool:
        try:
            with self._connect() as sock:
                sock.sendall(b"zPING\0")
                return self._reply(sock) == "PONG"
        except (OSError, ClamdError):
            return False

    def instream(self, data: bytes | Iterable[bytes]) -> str | None:
        """Scan a stream; the signature name when clamd finds one, else ``None``.

        Raises ``ClamdError`` on any failure, including a stream longer than
        ``max_stream_bytes`` (the caller records the file as not scanned).
        """
        chunks: Iterable[bytes] = [data] if isinstance(data, bytes | bytearray) else data
        size = self.config.chunk_size
        sent = 0
        try:
            with self._connect() as sock:
                sock.sendall(b"zINSTREAM\0")
                for block in chunks:
                    for i in range(0, len(block), size):
                        piece = block[i : i + size]
                        sent += len(piece)
                        if sent > self.config.max_stream_bytes:
                            raise ClamdError(f"stream longer than {self.config.max_stream_bytes} bytes")
                        sock.sendall(struct.pack("!L", len(piece)) + piece)
                sock.sendall(struct.pack("!L", 0))
                reply = self._reply(sock)
        except OSError as exc:
            raise ClamdError(f"clamd INSTREAM failed: {exc}") from exc
        return parse_reply(reply)


def parse_reply(reply: str) -> str | None:
    """``stream: OK`` -> None; ``stream: <name> FOUND`` -> name; anything else is an error."""
    body = reply.removeprefix("stream:").strip()
    if body == "OK":
        return None
    if body.endswith(" FOUND"):
        return body.removesuffix(" FOUND").strip() or "unknown"
    raise ClamdError(f"clamd answered {reply!r}")
