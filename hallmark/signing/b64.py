"""Strict base64 decoding.

Written by hand because Python's ``base64`` module is lenient: it accepts ``=`` padding in base64url
(forbidden by RFC 7515), silently discards non-alphabet characters unless told otherwise, and ignores
non-zero trailing bits. The Notary Project vectors require a trailing ``=`` to fail, as Go's
``base64.RawURLEncoding.Strict()`` does.
"""

from __future__ import annotations

import base64
import re

_URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
_STD_ALPHABET = re.compile(r"[A-Za-z0-9+/]*")


class Base64Error(ValueError):
    pass


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode_strict(text: str) -> bytes:
    """Decode unpadded base64url; reject padding, foreign characters and non-canonical encodings."""
    m = _URL_ALPHABET.match(text)
    end = m.end() if m else 0
    if end != len(text):
        raise Base64Error(f"illegal base64 data at input byte {end}")
    if len(text) % 4 == 1:
        raise Base64Error(f"illegal base64 data at input byte {len(text) - 1}")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise Base64Error(f"illegal base64 data at input byte {len(text) - 1} (non-zero trailing bits)")
    return data


def b64std_decode_strict(text: str) -> bytes:
    """Decode padded standard base64 (as used by ``x5c``) and reject anything non-canonical."""
    body = text.rstrip("=")
    pad = len(text) - len(body)
    m = _STD_ALPHABET.match(body)
    end = m.end() if m else 0
    if end != len(body) or pad > 2 or len(text) % 4 != 0:
        raise Base64Error(f"illegal base64 data at input byte {end}")
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode("ascii") != text:
        raise Base64Error("illegal base64 data (non-canonical encoding)")
    return data
