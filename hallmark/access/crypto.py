"""Secrets: argon2 passwords, opaque API tokens (only a SHA-256 kept) and the ES256 JWT signer."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)

# OWASP's argon2id baseline (19 MiB, t=2): strong, yet cheap enough per login.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
_DUMMY: list[str] = []
TOKEN_PREFIX = "hmk_"  # noqa: S105 (a public marker, not a secret)
MAX_JWT_BYTES = 6144  # ours are < 1 KiB; aiohttp refuses headers over 8 KiB with 400 anyway


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def _dummy_hash() -> str:
    """Verified when the user does not exist, so timing does not reveal valid user names."""
    if not _DUMMY:
        _DUMMY.append(_HASHER.hash(secrets.token_urlsafe(16)))
    return _DUMMY[0]


def verify_password(stored: str | None, password: str) -> bool:
    """argon2 verification (constant-time inside); always does the work, even without a stored hash."""
    try:
        return _HASHER.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    with contextlib.suppress(InvalidHashError):
        return _HASHER.check_needs_rehash(stored)
    return False


def random_password() -> str:
    return secrets.token_urlsafe(18)


def new_token() -> tuple[str, str, str]:
    """(token id, full token shown once, SHA-256 hex to store). 256 bits of secret."""
    token_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    return token_id, token, token_sha256(token)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def parse_token_id(token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    tid, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or len(tid) != 16 or not secret or len(token) > 256:
        return None
    return tid


def token_matches(token: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(token_sha256(token), stored_sha256)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 atomically; a concurrent creator wins, we keep theirs."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def write_secret_file(path: Path, text: str) -> None:
    _write_private(path, text.encode())


def new_signing_key_pem() -> str:
    """A fresh P-256 private key (PKCS#8 PEM) for :class:`TokenSigner`."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode("ascii")


class TokenSigner:
    """ES256 JWTs for the Docker token flow.

    The key is an instance secret in the database (``hallmark.metadata.secrets``), so a token
    issued by one replica is accepted by every other.
    """

    def __init__(self, pem: str, service: str, lifetime: int) -> None:
        self.service = service
        self.lifetime = lifetime
        loaded = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("the token signing key is not an EC private key")
        self._key = loaded
        self._public = loaded.public_key()
        der = self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = hashlib.sha256(der).hexdigest()[:16]

    def issue(self, subject: str, access: list[dict[str, Any]], extra: dict[str, Any]) -> tuple[str, int, int]:
        now = int(time.time())
        claims = {
            "iss": self.service,
            "aud": self.service,
            "sub": subject,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.lifetime,
            "jti": secrets.token_hex(12),
            "access": access,
            **extra,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid}), now, self.lifetime

    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a valid token; raises :class:`jwt.InvalidTokenError` for anything else (incl. alg none)."""
        if len(token) > MAX_JWT_BYTES:
            raise jwt.InvalidTokenError("token too large")
        claims: dict[str, Any] = jwt.decode(
            token,
            self._public,
            algorithms=["ES256"],
            audience=self.service,
            issuer=self.service,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            leeway=5,
        )
        return claims
