"""Errors raised by signing and verification; the message is the precise reason shown to users."""

from __future__ import annotations


class SigningError(Exception):
    """Signing could not proceed (bad key, unsupported algorithm, bad certificate chain)."""


class KeyLoadError(SigningError):
    """A key or certificate file could not be loaded or does not meet the requirements."""


class EnvelopeError(ValueError):
    """A signature envelope is malformed or violates the Notary Project envelope rules."""


class PolicyError(ValueError):
    """A trust policy document or trust store is invalid; verification must not proceed."""


class VerificationError(Exception):
    """One verification check failed; ``check`` names it (integrity, authenticity, ...)."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check
        self.reason = reason
