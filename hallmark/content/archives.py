"""Bounded iteration over zip/jar/war members, with zip-bomb guards.

``zipfile`` does the parsing; what it does not do is refuse bombs, so the limits below are
enforced here on both the declared sizes and the bytes actually inflated (declared sizes can
lie). Nested archives are handled by the caller, which passes the depth back in.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # first local header, or an empty archive
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_depth: int = 3  # archive in archive in archive
    max_members: int = 20_000
    max_member_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 512 * 1024 * 1024  # inflated bytes per outermost archive, nested included
    max_ratio: float = 200.0  # inflated / compressed, per member
    ratio_grace_bytes: int = 1024 * 1024  # tiny members may compress better than that legitimately


class ArchiveBudget:
    """Inflated bytes left for one outermost archive and everything nested in it."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.remaining = limits.max_total_bytes


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Problem:
    """A member (or the whole archive, ``name == ""``) that was not extracted, and why."""

    name: str
    reason: str  # "zip-bomb", "too-large", "too-many-members", "encrypted", "corrupt", "total-limit"
    detail: str
    fatal: bool = False  # the rest of the archive was abandoned


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGICS


def iter_zip(data: bytes, budget: ArchiveBudget) -> Iterator[Member | Problem]:
    """Yield each regular member's bytes, or a ``Problem``; never raises on bad input."""
    lim = budget.limits
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError) as exc:
        yield Problem("", "corrupt", f"not a readable zip: {exc}", fatal=True)
        return
    with zf:
        if len(infos) > lim.max_members:
            yield Problem("", "too-many-members", f"{len(infos)} members > {lim.max_members}", fatal=True)
            return
        for info in infos:
            if info.is_dir():
                continue
            name = info.filename
            declared_ratio = info.file_size / max(info.compress_size, 1)
            if info.flag_bits & 0x1:
                yield Problem(name, "encrypted", "encrypted member")
                continue
            if info.file_size > lim.max_member_bytes:
                yield Problem(name, "too-large", f"declares {info.file_size} bytes > {lim.max_member_bytes}")
                continue
            if info.file_size > lim.ratio_grace_bytes and declared_ratio > lim.max_ratio:
                yield Problem(name, "zip-bomb", f"declared ratio {declared_ratio:.0f}:1 > {lim.max_ratio:.0f}:1", True)
                return
            got = _read_member(zf, info, budget)
            if isinstance(got, Problem):
                yield got
                if got.fatal:
                    return
            else:
                yield Member(name, got)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: ArchiveBudget) -> bytes | Problem:
    """Inflate one member chunk by chunk, checking the real size and ratio as it grows.

    ``zipfile`` already stops at the declared size (and then fails the CRC), so these checks
    are defence in depth should that ever change; the declared-size checks catch real bombs.
    """
    lim = budget.limits
    buf = bytearray()
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > lim.max_member_bytes:
                    return Problem(info.filename, "too-large", f"inflates past {lim.max_member_bytes} bytes")
                if len(buf) > budget.remaining:
                    return Problem(
                        info.filename, "total-limit", f"archive inflates past {lim.max_total_bytes} bytes", True
                    )
                if len(buf) > lim.ratio_grace_bytes and len(buf) / max(info.compress_size, 1) > lim.max_ratio:
                    return Problem(info.filename, "zip-bomb", f"inflates more than {lim.max_ratio:.0f}:1", True)
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError) as exc:
        return Problem(info.filename, "corrupt", str(exc))
    except RuntimeError as exc:  # zipfile raises it for password-protected data
        return Problem(info.filename, "encrypted", str(exc))
    budget.remaining -= len(buf)
    return bytes(buf)
