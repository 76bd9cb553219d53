"""Signing keys: the ``Signer`` interface, a local-key implementation, loading and test-key generation.

``Signer`` is a protocol so a KMS or PKCS#11 HSM can sign without Hallmark ever holding the private key.
Private keys are never logged or shown in ``repr``; key files are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hallmark.signing.algorithms import Algorithm, UnsupportedKey, algorithm_for_key, der_to_raw_ecdsa, pss_padding
from hallmark.signing.errors import KeyLoadError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
CURVES: dict[str, ec.EllipticCurve] = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}


@runtime_checkable
class Signer(Protocol):
    """Anything that can produce a Notary signature: a local key, a KMS key, an HSM slot."""

    @property
    def algorithm(self) -> Algorithm:
        """The Notary algorithm (PS256..ES512) implied by the key."""
        ...

    @property
    def certificate_chain(self) -> Sequence[x509.Certificate]:
        """Signing certificate first, then intermediates, ending at the root."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``; ECDSA results are raw ``r||s`` as JWS and COSE require."""
        ...


class LocalKeySigner:
    """A ``Signer`` backed by a private key held in memory."""

    def __init__(self, key: PrivateKey, chain: Sequence[x509.Certificate]) -> None:
        if not chain:
            raise KeyLoadError("a certificate chain is required (signing certificate first)")
        try:
            self._alg = algorithm_for_key(key)
        except UnsupportedKey as exc:
            raise KeyLoadError(str(exc)) from exc
        leaf_pub = (
            chain[0]
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        own_pub = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if leaf_pub != own_pub:
            raise KeyLoadError("the private key does not match the signing certificate (first in chain)")
        self._key = key
        self._chain = tuple(chain)

    def __repr__(self) -> str:
        return f"LocalKeySigner({self._alg.name}, {self._chain[0].subject.rfc4514_string()!r})"

    @property
    def algorithm(self) -> Algorithm:
        return self._alg

    @property
    def certificate_chain(self) -> Sequence[x509.Certificate]:
        return self._chain

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, pss_padding(self._alg), self._alg.hash())
        return der_to_raw_ecdsa(self._key.sign(data, ec.ECDSA(self._alg.hash())), self._alg)


def order_chain(leaf: x509.Certificate, others: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Order certificates leaf to root by following issuer names (PKCS#12 bags are unordered)."""
    chain = [leaf]
    pool = [c for c in others if c != leaf]
    while pool:
        current = chain[-1]
        if current.issuer == current.subject:
            break
        nxt = next((c for c in pool if c.subject == current.issuer), None)
        if nxt is None:
            break
        chain.append(nxt)
        pool.remove(nxt)
    return chain


def _load_certs(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Load every certificate from a PEM bundle or a single DER file."""
    try:
        return _load_certs(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise KeyLoadError(f"cannot load certificates from {path}: {exc}") from exc


def load_signer(
    key_path: str | Path, cert_path: str | Path | None = None, password: bytes | None = None
) -> LocalKeySigner:
    """Load a local signer from PEM/PKCS#8 key + PEM chain, or from a PKCS#12 file holding both."""
    try:
        data = Path(key_path).read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot read key file {key_path}: {exc.strerror}") from exc
    chain: list[x509.Certificate] = []
    key: object
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as exc:
            # The message from cryptography never contains key material.
            raise KeyLoadError(f"cannot load private key from {key_path}: {exc}") from exc
        if cert_path is None:
            raise KeyLoadError("a PEM key needs --cert with the certificate chain")
    else:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, password)
        except (ValueError, TypeError) as exc:
            raise KeyLoadError(f"cannot load PKCS#12 file {key_path}: {exc}") from exc
        if key is None or cert is None:
            raise KeyLoadError(f"PKCS#12 file {key_path} lacks a private key or its certificate")
        chain = order_chain(cert, extra)
    if cert_path is not None:
        certs = load_certificates(cert_path)
        if not certs:
            raise KeyLoadError(f"no certificate in {cert_path}")
        chain = order_chain(certs[0], certs[1:])
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyLoadError(f"key type {type(key).__name__} is not supported (use RSA or ECDSA)")
    return LocalKeySigner(key, chain)


def generate_private_key(key_type: str = "rsa", bits: int = 3072, curve: str = "p256") -> PrivateKey:
    """Generate an RSA or EC key of a size the Notary Project allows."""
    if key_type == "rsa":
        if bits not in (2048, 3072, 4096):
            raise KeyLoadError(f"RSA key size {bits} is not supported (use 2048, 3072 or 4096)")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if key_type == "ec":
        name = curve.lower().replace("-", "")
        if name not in CURVES:
            raise KeyLoadError(f"EC curve {curve} is not supported (use p256, p384 or p521)")
        return ec.generate_private_key(CURVES[name])
    raise KeyLoadError(f"key type {key_type!r} is not supported (use rsa or ec)")


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    table: dict[str, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
        "sha256": hashes.SHA256(),
        "sha384": hashes.SHA384(),
        "sha512": hashes.SHA512(),
    }
    return table[algorithm_for_key(key).hash_name]


@dataclass(frozen=True)
class SigningPKI:
    """A throw-away CA and a code-signing leaf issued by it."""

    ca_key: PrivateKey
    ca_cert: x509.Certificate
    leaf_key: PrivateKey
    leaf_cert: x509.Certificate

    def __repr__(self) -> str:
        return f"SigningPKI(leaf={self.leaf_cert.subject.rfc4514_string()!r})"

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.leaf_cert, self.ca_cert]

    def signer(self) -> LocalKeySigner:
        return LocalKeySigner(self.leaf_key, self.chain)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def generate_test_ca_and_leaf(
    key_type: str = "rsa",
    bits: int = 3072,
    curve: str = "p256",
    common_name: str = "Hallmark Test Signer",
    organization: str = "Hallmark",
    now: dt.datetime | None = None,
    validity: dt.timedelta = dt.timedelta(days=365),
) -> SigningPKI:
    """Create a CA and leaf meeting the Notary Project certificate requirements.

    CA: critical basicConstraints CA=true, critical keyUsage keyCertSign. Leaf: critical keyUsage
    digitalSignature only, codeSigning EKU, basicConstraints CA=false. Subjects carry C, ST and O so
    they can be named as ``x509.subject`` trusted identities.
    """
    now = now or dt.datetime.now(dt.UTC)
    ca_key = generate_private_key(key_type, bits, curve)
    leaf_key = generate_private_key(key_type, bits, curve)
    ca_name = _name(f"{common_name} CA", organization)
    start = now - dt.timedelta(minutes=5)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, _hash_for(ca_key))
    )
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, _hash_for(ca_key))
    )
    return SigningPKI(ca_key, ca_cert, leaf_key, leaf_cert)


def _key_usage(digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def write_private_key(path: str | Path, key: PrivateKey, password: bytes | None = None) -> None:
    """Write a PKCS#8 PEM key readable by the owner only (0600, even if the file existed)."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_certificates(path: str | Path, certs: Sequence[x509.Certificate]) -> None:
    Path(path).write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def write_test_pki(out_dir: str | Path, pki: SigningPKI) -> dict[str, Path]:
    """Write ``leaf.key`` (0600), ``leaf.crt`` (chain leaf then CA) and ``ca.crt``; CA key is not kept."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"key": out / "leaf.key", "chain": out / "leaf.crt", "ca": out / "ca.crt"}
    write_private_key(paths["key"], pki.leaf_key)
    write_certificates(paths["chain"], pki.chain)
    write_certificates(paths["ca"], [pki.ca_cert])
    return paths
