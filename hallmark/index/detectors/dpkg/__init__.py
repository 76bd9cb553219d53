"""Debian/Ubuntu dpkg: ``var/lib/dpkg/status`` and distroless ``status.d/`` files.

Records the *source* package and version (``Source: name (version)``), which is what
Debian/Ubuntu advisories name. dpkg keeps no licences in its database (they live in
free-form ``copyright`` files), so none are reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.parser import BytesHeaderParser

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.model import Distro, Package

_PARSER = BytesHeaderParser()


def stanzas(data: bytes) -> Iterator[dict[str, str]]:
    """RFC 822-style paragraphs separated by blank lines (deb822)."""
    for chunk in re.split(rb"\n\s*\n", data):
        if chunk.strip():
            msg = _PARSER.parsebytes(chunk.strip() + b"\n")
            yield {k: str(v).strip() for k, v in msg.items()}


class DpkgDetector(Detector):
    name = "dpkg"
    patterns = ("var/lib/dpkg/status", "var/lib/dpkg/status.d/*")

    def detect(self, path: str, data: bytes) -> Detection | None:
        if path.endswith(".md5sums"):
            return None
        pkgs = []
        for st in stanzas(data):
            name, version = st.get("Package"), st.get("Version")
            if not name or not version:
                continue
            status = st.get("Status", "install ok installed").split()
            if "installed" not in status[-1:]:
                continue
            src, src_version = name, version
            if st.get("Source"):
                m = re.match(r"(\S+)(?:\s+\((\S+)\))?", st["Source"])
                if m:
                    src, src_version = m.group(1), m.group(2) or version
            pkg = Package(
                name=name,
                version=version,
                ecosystem="Debian",
                source_name=src,
                source_version=src_version,
                type="os",
                extra={"arch": st.get("Architecture", "")},
            )
            pkgs.append(pkg)
        return Detection(packages=pkgs)

    def finalize(self, pkg: Package, distro: Distro | None) -> None:
        namespace = "ubuntu" if distro and distro.id == "ubuntu" else "debian"
        if namespace == "ubuntu":
            pkg.ecosystem = "Ubuntu"
        qualifiers = {"arch": str(pkg.extra.get("arch") or "")}
        if distro and distro.version_id:
            qualifiers["distro"] = f"{distro.id}-{distro.version_id}"
        if pkg.source_name and pkg.source_name != pkg.name:
            qualifiers["upstream"] = pkg.source_name
        pkg.purl = PackageURL(
            "deb", namespace, pkg.name, pkg.version, {k: v for k, v in qualifiers.items() if v}
        ).to_string()


DETECTORS = [DpkgDetector()]
