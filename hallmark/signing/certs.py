"""Certificate-chain rules of the Notary Project and the trust store on disk.

Written by hand on top of ``cryptography`` because its ``x509.verification`` module implements the
Web PKI profile (server/client TLS): it rejects self-signed end-entity signing certificates, which the
Notary Project allows and the real vectors use, and it has no notion of "any certificate in the chain
is a trust anchor" that notation applies. Signature checks still use ``verify_directly_issued_by``.
Validity periods are not checked here: that is the separate "authentic timestamp" check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from hallmark.signing.algorithms import MIN_RSA_BITS
from hallmark.signing.errors import PolicyError

TRUST_STORE_TYPES = ("ca", "signingAuthority", "tsa")
_CERT_SUFFIXES = {".crt", ".pem", ".cer", ".der"}


class ChainError(ValueError):
    """The certificate chain breaks a Notary Project requirement."""


def describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def check_key_strength(cert: x509.Certificate) -> None:
    """Reject RSA keys under 2048 bits, unknown curves and SHA-1 certificate signatures."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ChainError(
            f"certificate {describe(cert)!r} has a weak RSA key of {key.key_size} bits (minimum {MIN_RSA_BITS})"
        )
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        raise ChainError(f"certificate {describe(cert)!r} uses the weak curve {key.curve.name}")
    try:
        sig_hash = cert.signature_hash_algorithm
    except Exception:
        sig_hash = None
    if isinstance(sig_hash, hashes.SHA1 | hashes.MD5):
        raise ChainError(f"certificate {describe(cert)!r} is signed with {sig_hash.name.upper()}, which is not allowed")


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _check_leaf(cert: x509.Certificate, eku: x509.ObjectIdentifier, purpose: str) -> None:
    bc = _ext(cert, x509.BasicConstraints)
    if bc is not None and bc.value.ca:
        raise ChainError(f"signing certificate {describe(cert)!r} is a CA certificate (basicConstraints CA=true)")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None:
        raise ChainError(f"signing certificate {describe(cert)!r} has no keyUsage extension")
    if not ku.value.digital_signature:
        raise ChainError(f"signing certificate {describe(cert)!r} keyUsage lacks digitalSignature")
    if ku.value.key_cert_sign:
        raise ChainError(f"signing certificate {describe(cert)!r} keyUsage must not include keyCertSign")
    ext = _ext(cert, x509.ExtendedKeyUsage)
    # The specification makes the EKU extension optional; when present it must allow this purpose.
    if ext is not None and eku not in list(ext.value):
        names = ", ".join(getattr(o, "_name", o.dotted_string) for o in ext.value) or "none"
        raise ChainError(f"signing certificate {describe(cert)!r} extended key usage ({names}) lacks {purpose}")


def _check_ca(cert: x509.Certificate, below: int) -> None:
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not bc.value.ca:
        raise ChainError(f"certificate {describe(cert)!r} issues certificates but is not a CA (basicConstraints)")
    if bc.value.path_length is not None and below > bc.value.path_length:
        raise ChainError(f"certificate {describe(cert)!r} path length constraint {bc.value.path_length} exceeded")
    ku = _ext(cert, x509.KeyUsage)
    if ku is not None and not ku.value.key_cert_sign:
        raise ChainError(f"CA certificate {describe(cert)!r} keyUsage lacks keyCertSign")


def validate_chain(
    chain: Sequence[x509.Certificate],
    eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.CODE_SIGNING,
    purpose: str = "codeSigning",
) -> None:
    """Check a leaf-to-root chain's structure, key strength and extensions (not validity dates)."""
    if not chain:
        raise ChainError("certificate chain is empty")
    for cert in chain:
        check_key_strength(cert)
    _check_leaf(chain[0], eku, purpose)
    if len(chain) == 1:
        if not _is_self_signed(chain[0]):
            raise ChainError(
                f"certificate chain has only {describe(chain[0])!r}, which is not self-signed; include its issuers"
            )
        return
    for i in range(len(chain) - 1):
        child, parent = chain[i], chain[i + 1]
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise ChainError(
                f"certificate {describe(child)!r} is not issued by {describe(parent)!r}: {exc or 'bad signature'}"
            ) from exc
        _check_ca(parent, below=i)
    if not _is_self_signed(chain[-1]):
        raise ChainError(f"root certificate {describe(chain[-1])!r} is not self-signed")


class TrustStore:
    """Trust anchors on disk: ``x509/<type>/<name>/*.crt`` as notation lays them out."""

    def __init__(self, root: str | Path) -> None:
        path = Path(root)
        self.root = path / "x509" if (path / "x509").is_dir() else path

    def certificates(self, store_type: str, name: str) -> list[x509.Certificate]:
        if store_type not in TRUST_STORE_TYPES:
            raise PolicyError(f"unsupported trust store type {store_type!r}")
        folder = self.root / store_type / name
        if not folder.is_dir():
            raise PolicyError(f'the trust store "{name}" of type "{store_type}" does not exist')
        certs: list[x509.Certificate] = []
        for file in sorted(folder.iterdir()):
            if not file.is_file() or file.suffix.lower() not in _CERT_SUFFIXES:
                continue
            data = file.read_bytes()
            try:
                certs.extend(
                    x509.load_pem_x509_certificates(data)
                    if b"-----BEGIN" in data
                    else [x509.load_der_x509_certificate(data)]
                )
            except ValueError as exc:
                raise PolicyError(f"trust store file {file} is not a certificate: {exc}") from exc
        if not certs:
            raise PolicyError(f'the trust store "{name}" of type "{store_type}" has no certificates')
        return certs
