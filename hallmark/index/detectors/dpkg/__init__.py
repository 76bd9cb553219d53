"""Debian/Ubuntu dpkg: ``var/lib/dpkg/status`` and distroless ``status.d/`` files.

Records the *source* package and version (``Source: name (version)``), which is what
Debian/Ubuntu advisories name. dpkg keeps no licences in its database (they live in
free-form ``copyright`` files), so none are reported.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.index.limits import CapExceeded, current_limits
from hallmark.model import Distro, Package

_CANONICAL = {b"package": "Package", b"version": "Version", b"status": "Status", b"source": "Source",
              b"architecture": "Architecture"}  # fmt: skip


def stanzas(data: bytes) -> Iterator[dict[str, str]]:
    """deb822 paragraphs (separated by blank lines), only the fields the detector uses.

    One pass over the lines, nothing kept but the current paragraph's few fields: a status
    file of 100,000 paragraphs used to take minutes and hundreds of MB through ``email``.
    """
    fields: dict[str, str] = {}
    for line in io.BytesIO(data):
        if not line.strip():
            if fields:
                yield fields
                fields = {}
            continue
        if line[:1] in (b" ", b"\t"):
            continue  # continuation of a multi-line field (Description, Conffiles): not used
        key, sep, value = line.partition(b":")
        if not sep:
            continue
        name = _CANONICAL.get(key.strip().lower()) if len(key) <= 16 else None
        if name is not None and name not in fields:
            fields[name] = value.strip().decode("utf-8", "replace")
    if fields:
        yield fields


class DpkgDetector(Detector):
    name = "dpkg"
    patterns = ("var/lib/dpkg/status", "var/lib/dpkg/status.d/*")

    def detect(self, path: str, data: bytes) -> Detection | None:
        if path.endswith(".md5sums"):
            return None
        pkgs: list[Package] = []
        cap = current_limits().max_packages_per_image
        for st in stanzas(data):
            name, version = st.get("Package"), st.get("Version")
            if not name or not version:
                continue
            if len(pkgs) >= cap:  # stop reading here: the rest would only cost time and memory
                raise CapExceeded(f"image cap: /{path} lists more than {cap} packages")
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
