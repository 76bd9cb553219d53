"""RPM: the SQLite rpmdb (``rpmdb.sqlite``, RHEL/Fedora/Rocky/Alma 9+, openSUSE Tumbleweed).

The database is opened in memory (``sqlite3.Connection.deserialize``), never written to disk.
Each ``Packages.blob`` is an RPM header; its format (index entries + data store, big-endian)
is small and fixed, and no maintained pure-Python library reads a bare header blob, so it is
parsed here.

Older databases are reported as a warning, not parsed: the Berkeley DB ``Packages`` hash file
(RHEL/CentOS <= 8, Amazon Linux 2) needs a reader for BDB hash/overflow pages, and the ndb
``Packages.db`` (SUSE 15) needs its slot-page/blob-file format; both then hold the same header
blobs that :func:`parse_header` reads.
"""

from __future__ import annotations

import sqlite3
import struct
from typing import Any

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.model import Distro, Package

TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH = 1000, 1001, 1002, 1003
TAG_LICENSE, TAG_ARCH, TAG_SOURCERPM, TAG_VENDOR = 1014, 1022, 1044, 1011
_WANTED = {TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_LICENSE, TAG_ARCH, TAG_SOURCERPM, TAG_VENDOR}

OSV_ECOSYSTEMS = {
    "rhel": "Red Hat",
    "rocky": "Rocky Linux",
    "almalinux": "AlmaLinux",
    "opensuse-leap": "openSUSE",
    "opensuse-tumbleweed": "openSUSE",
    "sles": "SUSE",
    "mariner": "Mariner",
    "azurelinux": "Azure Linux",
}


def parse_header(blob: bytes) -> dict[int, Any]:
    """Tags of an rpmdb header blob (no lead, no magic): il, dl, il*16 index bytes, dl data bytes."""
    if len(blob) < 8:
        raise ValueError("header blob too short")
    il, dl = struct.unpack(">ii", blob[:8])
    if il < 0 or dl < 0 or 8 + il * 16 + dl > len(blob) or il > 100_000:
        raise ValueError("header blob sizes out of range")
    store = blob[8 + il * 16 : 8 + il * 16 + dl]
    out: dict[int, Any] = {}
    for i in range(il):
        tag, typ, off, _cnt = struct.unpack(">iiii", blob[8 + i * 16 : 24 + i * 16])
        if tag not in _WANTED or not 0 <= off < len(store):
            continue
        if typ == 4:  # INT32
            if off + 4 <= len(store):
                out[tag] = struct.unpack(">i", store[off : off + 4])[0]
        elif typ in (6, 8, 9):  # STRING, STRING_ARRAY, I18NSTRING: take the first string
            end = store.find(b"\0", off)
            out[tag] = store[off : end if end >= 0 else len(store)].decode("utf-8", "replace")
    return out


def _source_name(srpm: str) -> str | None:
    """``name-version-release.src.rpm`` -> ``name``."""
    base = srpm.removesuffix(".rpm").rsplit(".", 1)[0]  # drop .src
    parts = base.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else None


class RpmDetector(Detector):
    name = "rpm"
    patterns = (
        "var/lib/rpm/rpmdb.sqlite",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
        "var/lib/rpm/Packages",
        "var/lib/rpm/Packages.db",
        "usr/lib/sysimage/rpm/Packages.db",
    )

    def detect(self, path: str, data: bytes) -> Detection | None:
        if not path.endswith(".sqlite"):
            return Detection(warnings=[f"/{path}: Berkeley DB/ndb rpm databases are not read (rpmdb.sqlite only)"])
        db = sqlite3.connect(":memory:")
        try:
            db.deserialize(data)
            rows = db.execute("SELECT blob FROM Packages").fetchall()
        except sqlite3.Error as exc:
            return Detection(warnings=[f"/{path}: unreadable rpm database: {exc}"])
        finally:
            db.close()
        pkgs = []
        for (blob,) in rows:
            try:
                h = parse_header(bytes(blob))
            except (ValueError, struct.error):
                continue
            name, ver, rel = h.get(TAG_NAME), h.get(TAG_VERSION), h.get(TAG_RELEASE)
            if not name or not ver or name == "gpg-pubkey":
                continue
            epoch = h.get(TAG_EPOCH)
            version = f"{epoch}:{ver}-{rel}" if epoch else f"{ver}-{rel}"
            srpm = h.get(TAG_SOURCERPM) or ""
            pkgs.append(
                Package(
                    name=name,
                    version=version,
                    ecosystem="Red Hat",
                    source_name=_source_name(srpm) or name,
                    source_version=version,
                    licenses=[h[TAG_LICENSE]] if h.get(TAG_LICENSE) else [],
                    type="os",
                    extra={"arch": h.get(TAG_ARCH) or "", "epoch": epoch, "sourcerpm": srpm},
                )
            )
        return Detection(packages=pkgs)

    def finalize(self, pkg: Package, distro: Distro | None) -> None:
        ns = distro.id if distro else "redhat"
        if distro:
            pkg.ecosystem = OSV_ECOSYSTEMS.get(distro.id, pkg.ecosystem)
        version = pkg.version.split(":", 1)[-1]
        q = {"arch": str(pkg.extra.get("arch") or "")}
        if pkg.extra.get("epoch"):
            q["epoch"] = str(pkg.extra["epoch"])
        if distro and distro.version_id:
            q["distro"] = f"{distro.id}-{distro.version_id}"
        pkg.purl = PackageURL("rpm", ns, pkg.name, version, {k: v for k, v in q.items() if v}).to_string()


DETECTORS = [RpmDetector()]
