"""Alpine apk: ``lib/apk/db/installed`` (``o:`` is the origin, i.e. source, package)."""

from __future__ import annotations

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.model import Distro, Package


class ApkDetector(Detector):
    name = "apk"
    patterns = ("lib/apk/db/installed",)

    def detect(self, path: str, data: bytes) -> Detection | None:
        pkgs = []
        for block in data.decode("utf-8", "replace").split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                    fields[line[0]] = line[2:]
            if "P" not in fields or "V" not in fields:
                continue
            pkgs.append(
                Package(
                    name=fields["P"],
                    version=fields["V"],
                    ecosystem="Alpine",
                    source_name=fields.get("o") or fields["P"],
                    source_version=fields["V"],
                    licenses=fields["L"].split() if fields.get("L") else [],
                    type="os",
                    extra={"arch": fields.get("A", "")},
                )
            )
        return Detection(packages=pkgs)

    def finalize(self, pkg: Package, distro: Distro | None) -> None:
        qualifiers = {"arch": str(pkg.extra.get("arch") or "")}
        if distro and distro.version_id:
            qualifiers["distro"] = f"{distro.id}-{distro.version_id}"
        if pkg.source_name and pkg.source_name != pkg.name:
            qualifiers["upstream"] = pkg.source_name
        ns = distro.id if distro else "alpine"
        pkg.purl = PackageURL("apk", ns, pkg.name, pkg.version, {k: v for k, v in qualifiers.items() if v}).to_string()


DETECTORS = [ApkDetector()]
