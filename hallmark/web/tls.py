"""HTTPS for ``hallmark serve``: one server context, re-read when the certificate files change.

Kubernetes calls admission webhooks over HTTPS only, and certificates are rotated underneath a
running server (cert-manager, a renewed secret mounted through a symlink swap, a
``hallmark tls generate --force``). The listener keeps one :class:`ssl.SSLContext` for its whole
life, so rotation happens per connection instead: the listener context's SNI callback, which
OpenSSL calls on every ClientHello (with or without a server name), stats both files and, when
they changed, builds a fresh context from them and hands it to the new connection. So:

* a new connection sees a new certificate as soon as both files are complete (the pickup
  latency is zero: no polling interval; the cost is two ``stat`` calls per handshake);
* connections already open keep the certificate they were established with;
* a half-written pair (new certificate, old key) fails to load, is logged once and skipped:
  the previous certificate is served until the files change again and load cleanly.

Every worker process (``[server] workers``) holds its own context and reloads on its own.
Defaults: TLS 1.2 and 1.3 only, forward-secret AEAD cipher suites for TLS 1.2, no compression,
no renegotiation, ALPN ``http/1.1``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from hallmark.config import ServerConfig

log = logging.getLogger(__name__)

# TLS 1.2 suites: ECDHE key exchange and AEAD only (TLS 1.3 suites are fixed by OpenSSL and all fine).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TLSConfigError(Exception):
    """The certificate or key cannot be served; the one-line message names the file and why."""


@dataclass(frozen=True)
class CertificateInfo:
    """What was loaded, for logs and tests."""

    serial: int
    subject: str
    hosts: tuple[str, ...]
    not_after: dt.datetime


Stamp = tuple[tuple[int, int, int, int, int], ...]


def _stamp(*paths: Path) -> Stamp:
    """Identity and version of each file: a rewrite, a rename over it or a symlink swap all change it."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(f"TLS {what} {path} does not exist") from None
    except IsADirectoryError:
        raise TLSConfigError(f"TLS {what} {path} is a directory, not a file") from None
    except PermissionError:
        raise TLSConfigError(f"TLS {what} {path} is not readable (permission denied)") from None
    except OSError as exc:
        raise TLSConfigError(f"TLS {what} {path} cannot be read: {exc.strerror or exc}") from None


def describe(cert_pem: bytes) -> CertificateInfo:
    """The first certificate of a PEM chain: serial, subject, SAN hosts and expiry."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    hosts: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        pass
    return CertificateInfo(cert.serial_number, cert.subject.rfc4514_string(), tuple(hosts), cert.not_valid_after_utc)


def _check_pair(cert: Path, key: Path) -> CertificateInfo:
    """Read and parse both files first, so the error says which file is wrong and how."""
    cert_pem = _read(cert, "certificate")
    key_pem = _read(key, "key")
    try:
        info = describe(cert_pem)
    except ValueError:
        raise TLSConfigError(f"TLS certificate {cert} is not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TLSConfigError(f"TLS key {key} is encrypted; Hallmark needs an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSConfigError(f"TLS key {key} is not a PEM private key") from None
    leaf = x509.load_pem_x509_certificate(cert_pem)
    if private.public_key() != leaf.public_key():
        raise TLSConfigError(f"TLS key {key} does not belong to the certificate {cert}")
    return info


def server_context(cert: Path, key: Path) -> tuple[ssl.SSLContext, CertificateInfo]:
    """A server context with modern defaults, loaded from ``cert`` (PEM chain, leaf first) and ``key``."""
    info = _check_pair(cert, key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:  # parsed above, so rare: e.g. a key type this OpenSSL refuses
        raise TLSConfigError(f"TLS certificate {cert} / key {key} rejected by OpenSSL: {exc.reason or exc}") from None
    except OSError as exc:  # replaced between the check and the load
        raise TLSConfigError(f"TLS files {cert}, {key} cannot be read: {exc.strerror or exc}") from None
    return ctx, info


class TLSReloader:
    """The listener's context; hands every new connection the newest loadable certificate."""

    def __init__(self, cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        try:
            stamp = _stamp(self.cert, self.key)
        except OSError:
            stamp = ()
        ctx, self.info = server_context(self.cert, self.key)  # raises TLSConfigError: refuse to start
        self._stamp = stamp
        self._failed: Stamp | None = None
        self.reloads = 0
        self.listener = ctx
        self.current = ctx
        ctx.sni_callback = self._on_client_hello
        if self.info.not_after < dt.datetime.now(dt.UTC):
            log.warning("TLS certificate %s expired on %s", self.cert, self.info.not_after.isoformat())

    @classmethod
    def from_config(cls, server: ServerConfig) -> TLSReloader | None:
        """None when ``[server] tls_cert`` / ``tls_key`` are not set (plain HTTP)."""
        if not server.tls_cert or not server.tls_key:
            return None
        return cls(Path(server.tls_cert).expanduser(), Path(server.tls_key).expanduser())

    def check(self) -> bool:
        """Reload when either file changed since the last load (or failed attempt); True if reloaded."""
        try:
            stamp = _stamp(self.cert, self.key)
        except OSError as exc:
            if self._failed != ():
                log.warning("TLS files not readable (%s); still serving serial %x", exc, self.info.serial)
                self._failed = ()
            return False
        if stamp == self._stamp or stamp == self._failed:
            return False
        try:
            ctx, info = server_context(self.cert, self.key)
        except TLSConfigError as exc:
            self._failed = stamp
            log.warning("%s; still serving the certificate with serial %x", exc, self.info.serial)
            return False
        self.current, self.info, self._stamp, self._failed = ctx, info, stamp, None
        self.reloads += 1
        log.info(
            "TLS certificate reloaded from %s: serial %x, hosts %s, valid until %s",
            self.cert,
            info.serial,
            ",".join(info.hosts) or info.subject,
            info.not_after.isoformat(),
        )
        return True

    def _on_client_hello(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        """OpenSSL's servername callback: runs for every handshake, before the certificate is sent."""
        try:
            self.check()
            if self.current is not self.listener:
                conn.context = self.current
        except Exception:  # never abort a handshake over a reload problem: the old certificate still works
            log.exception("TLS certificate reload check failed")
