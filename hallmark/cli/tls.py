"""``hallmark tls generate``: a private CA and a server certificate for HTTPS (tests and small sites).

Kubernetes calls admission webhooks over HTTPS and checks the server against the ``caBundle`` of
the webhook configuration, so the command prints that bundle (base64 of the CA certificate) with
the files and the configuration lines to set. An existing CA in the folder is reused: issuing a
new server certificate (other hosts, renewal) then needs no change on the clients or clusters.
Keys are written with mode 0600 and never replaced without ``--force``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hallmark.cli._common import ConfigOption, DataDirOption, get_config

CA_DAYS = 3650
MAX_DAYS = 3650
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

tls_app = typer.Typer(no_args_is_help=True, help="HTTPS certificates for hallmark serve.")


class HostError(ValueError):
    """A --hosts entry that is neither a DNS name nor an IP address."""


@dataclass(frozen=True)
class Issued:
    """The files written (or reused) by :func:`generate`."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    ca_reused: bool
    serial: int
    not_after: dt.datetime

    def ca_bundle(self) -> str:
        """What Kubernetes webhook configurations take as ``clientConfig.caBundle``."""
        return base64.b64encode(self.ca_cert.read_bytes()).decode()


def parse_hosts(text: str) -> list[x509.GeneralName]:
    """``h1,h2,10.0.0.1,::1`` as subject alternative names (DNS names lower-cased, ``*.`` allowed)."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in text.split(","):
        host = raw.strip().lower()
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
            continue
        except ValueError:
            pass
        labels = host.rstrip(".").split(".")
        if labels and labels[0] == "*" and len(labels) > 2:
            labels = labels[1:]
        if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
            raise HostError(f"{raw.strip()!r} is neither a DNS name nor an IP address")
        names.append(x509.DNSName(host.rstrip(".")))
    if not names:
        raise HostError("no host given")
    return names


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically (a server watching the file never reads half of it), with ``mode`` from the start."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _new_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A distinct name per CA: two generated CAs are never mistaken for one another by a client.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hallmark"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Hallmark CA {socket.gethostname()[:32]} {now:%Y-%m-%d %H%M%S}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _load_ca(cert_path: Path, key_path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ValueError(f"{key_path} is not the EC key of {cert_path}")
    return key, cert


def _server_cert(
    names: list[x509.GeneralName],
    days: int,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    first = names[0].value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first)[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def generate(out: Path, hosts: str, days: int = 365, force: bool = False, new_ca: bool = False) -> Issued:
    """Write ``ca.crt``/``ca.key`` (unless a CA is there and ``new_ca`` is not set) and ``server.crt``/
    ``server.key`` for ``hosts`` into ``out``. Raises FileExistsError rather than replace a key
    without ``force``, HostError for a bad host and ValueError for an unusable existing CA."""
    names = parse_hosts(hosts)
    out.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = out / "ca.crt", out / "ca.key"
    cert_path, key_path = out / "server.crt", out / "server.key"
    have_ca = ca_cert_path.exists() or ca_key_path.exists()
    replaced = [p for p in ([key_path] + ([ca_key_path] if new_ca else [])) if p.exists()]
    if replaced and not force:
        raise FileExistsError(", ".join(str(p) for p in replaced))
    now = dt.datetime.now(dt.UTC)
    if have_ca and not new_ca:
        if not (ca_cert_path.exists() and ca_key_path.exists()):
            missing = ca_key_path if ca_cert_path.exists() else ca_cert_path
            raise ValueError(f"the CA in {out} is incomplete ({missing} is missing); pass --new-ca to make a new one")
        ca_key, ca_cert = _load_ca(ca_cert_path, ca_key_path)
    else:
        ca_key, ca_cert = _new_ca(now)
        _write(ca_key_path, _key_pem(ca_key), 0o600)
        _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key, cert = _server_cert(names, days, ca_key, ca_cert, now)
    # Key first: a server reloading in between sees a mismatched pair, skips it and keeps the old one.
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(
        ca_cert_path,
        ca_key_path,
        cert_path,
        key_path,
        have_ca and not new_ca,
        cert.serial_number,
        cert.not_valid_after_utc,
    )


@tls_app.command("generate")
def generate_command(
    hosts: Annotated[
        str,
        typer.Option("--hosts", help="Comma-separated DNS names and IP addresses the server is reached by (the SANs)."),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the files (default: <data folder>/tls).")
    ] = None,
    days: Annotated[
        int, typer.Option("--days", min=1, max=MAX_DAYS, help="Validity of the server certificate in days.")
    ] = 365,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing server key (and certificate).")] = False,
    new_ca: Annotated[
        bool, typer.Option("--new-ca", help="Make a new CA even if the folder has one (clients need the new one).")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a CA and a server certificate signed by it; print the paths, caBundle and settings."""
    folder = (out or get_config(data_dir, config).data_path / "tls").expanduser().resolve()
    try:
        issued = generate(folder, hosts, days, force, new_ca)
    except HostError as exc:
        typer.echo(f"hallmark: --hosts: {exc}", err=True)
        raise typer.Exit(2) from None
    except FileExistsError as exc:
        typer.echo(f"hallmark: {exc} exists; pass --force to replace it", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(f"hallmark: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"hallmark: cannot write to {folder}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    ca_note = "existing CA, reused" if issued.ca_reused else "new"
    typer.echo(f"CA certificate:     {issued.ca_cert}  ({ca_note}; clients trust this one)")
    typer.echo(f"CA key:             {issued.ca_key}  (keep private; signs later server certificates)")
    typer.echo(
        f"Server certificate: {issued.cert}  (hosts {hosts}; serial {issued.serial:x}; "
        f"valid until {issued.not_after:%Y-%m-%d})"
    )
    typer.echo(f"Server key:         {issued.key}")
    typer.echo("")
    typer.echo("Configuration (hallmark serve re-reads the files when they change):")
    typer.echo("  [server]")
    typer.echo(f'  tls_cert = "{issued.cert}"')
    typer.echo(f'  tls_key = "{issued.key}"')
    typer.echo("or in the environment:")
    typer.echo(f"  HALLMARK_SERVER__TLS_CERT={issued.cert}")
    typer.echo(f"  HALLMARK_SERVER__TLS_KEY={issued.key}")
    typer.echo("")
    typer.echo("caBundle (webhooks[].clientConfig.caBundle of the admission webhook configurations):")
    typer.echo(issued.ca_bundle())


def register(app: typer.Typer) -> None:
    app.add_typer(tls_app, name="tls")
