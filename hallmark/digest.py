"""OCI digests (``algorithm:hex``): parsing and streaming hashers for sha256 and sha512."""

from __future__ import annotations

import hashlib
import re

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


class InvalidDigest(ValueError):
    """A string that is not a digest Hallmark can verify."""


def parse_digest(value: str) -> tuple[str, str]:
    if not _DIGEST_RE.match(value):
        raise InvalidDigest(f"invalid or unsupported digest {value!r}")
    algo, _, hexpart = value.partition(":")
    return algo, hexpart


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{ALGORITHMS[algorithm](data).hexdigest()}"


class MultiHasher:
    """Hashes a stream with the given algorithms at once.

    Uploads hash sha256 only while streaming (it is what every client uses); a rare
    sha512 digest named at the end is checked by re-reading the stored file.
    """

    def __init__(self, algorithms: tuple[str, ...] = ("sha256",)) -> None:
        self._h = {name: ALGORITHMS[name]() for name in algorithms}
        self.size = 0

    def has(self, algorithm: str) -> bool:
        return algorithm in self._h

    def update(self, chunk: bytes | memoryview) -> None:
        for h in self._h.values():
            h.update(chunk)
        self.size += len(chunk)

    def digest(self, algorithm: str = "sha256") -> str:
        return f"{algorithm}:{self._h[algorithm].hexdigest()}"
