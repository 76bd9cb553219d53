"""OCI digests (``algorithm:hex``): parsing and streaming hashers for sha256 and sha512."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import re
from typing import Any

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


# OpenSSL's SHA256_CTX (h[8], Nl, Nh, data[16], num, md_len): the same 112 bytes in 1.0 to 3.x.
_CTX_SIZE = 112


def _load_sha256() -> tuple[Any, Any, Any] | None:
    """OpenSSL's low-level SHA-256, whose running state is a plain struct we can save.

    hashlib cannot export a running hash, so a chunked upload continued by another
    process (or after a restart) would have to re-read everything written so far: with
    several server processes that made chunked pushes quadratic. The CNCF registry keeps
    Go's marshalled hash state for the same reason. Python already links this libcrypto
    for hashlib; the functions release the GIL like hashlib does. Checked against
    hashlib at import; any surprise falls back to hashlib (and re-reading on resume).
    """
    name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
    try:
        lib = ctypes.CDLL(name)
        init, update, final = lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final
    except (OSError, AttributeError):
        return None
    init.argtypes = [ctypes.c_void_p]
    update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    final.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    for fn in (init, update, final):
        fn.restype = ctypes.c_int
    ctx = ctypes.create_string_buffer(_CTX_SIZE * 2)  # slack in case of a larger struct
    out = ctypes.create_string_buffer(32)
    sample = b"hallmark" * 1000
    if not (init(ctx) and update(ctx, sample, len(sample)) and final(out, ctx)):
        return None
    if out.raw != hashlib.sha256(sample).digest():
        return None
    return init, update, final


_SHA256 = _load_sha256()


class StreamHasher:
    """sha256 of a stream whose running state can be saved and restored (:meth:`state`).

    Uploads hash sha256 only while streaming (it is what every client uses); a rare
    sha512 digest named at the end is checked by re-reading the stored file.
    """

    def __init__(self, state: bytes | None = None) -> None:
        self.size = 0
        self._ctx: ctypes.Array[ctypes.c_char] | None = None
        self._h: hashlib._Hash | None = None
        if _SHA256 is not None:
            self._ctx = ctypes.create_string_buffer(_CTX_SIZE * 2)
            if state is not None:
                if len(state) != _CTX_SIZE + 8:
                    raise ValueError("invalid hash state")
                ctypes.memmove(self._ctx, state[8:], _CTX_SIZE)
                self.size = int.from_bytes(state[:8], "big")
            else:
                _SHA256[0](self._ctx)
        elif state is not None:
            raise ValueError("hash state not supported here")
        else:
            self._h = hashlib.sha256()

    @staticmethod
    def resumable() -> bool:
        return _SHA256 is not None

    def has(self, algorithm: str) -> bool:
        return algorithm == "sha256"

    def update(self, chunk: bytes | memoryview) -> None:
        if self._ctx is not None and _SHA256 is not None:
            if isinstance(chunk, memoryview) and not chunk.readonly and chunk.contiguous and len(chunk):
                # A writable buffer (an upload's aligned buffer) is hashed in place, not copied.
                _SHA256[1](self._ctx, ctypes.addressof(ctypes.c_char.from_buffer(chunk)), len(chunk))
            else:
                data = chunk if isinstance(chunk, bytes) else bytes(chunk)
                _SHA256[1](self._ctx, data, len(data))
        elif self._h is not None:
            self._h.update(chunk)
        self.size += len(chunk)

    def state(self) -> bytes | None:
        """Size and running state, or None where states are not supported."""
        if self._ctx is None:
            return None
        return self.size.to_bytes(8, "big") + self._ctx.raw[:_CTX_SIZE]

    def digest(self, algorithm: str = "sha256") -> str:
        if algorithm != "sha256":
            raise ValueError(f"not hashed while streaming: {algorithm}")
        if self._ctx is not None and _SHA256 is not None:
            copy = ctypes.create_string_buffer(self._ctx.raw, len(self._ctx))
            out = ctypes.create_string_buffer(32)
            _SHA256[2](out, copy)
            return f"sha256:{out.raw.hex()}"
        assert self._h is not None
        return f"sha256:{self._h.hexdigest()}"
