"""PHP: Composer's ``vendor/composer/installed.json`` (v1: a list; v2: ``{"packages": [...]}``)."""

from __future__ import annotations

import json

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.model import Package


class ComposerDetector(Detector):
    name = "composer"
    patterns = ("*composer/installed.json",)

    def detect(self, path: str, data: bytes) -> Detection | None:
        try:
            doc = json.loads(data)
        except ValueError:
            return Detection(warnings=[f"/{path}: not valid JSON"])
        entries = doc.get("packages") if isinstance(doc, dict) else doc
        pkgs = []
        for e in entries if isinstance(entries, list) else []:
            if not isinstance(e, dict):
                continue
            name, version = e.get("name"), e.get("version")
            if not isinstance(name, str) or not isinstance(version, str):
                continue
            vendor, _, short = name.rpartition("/")
            lic = e.get("license")
            pkgs.append(
                Package(
                    name=name,
                    version=version,
                    ecosystem="Packagist",
                    purl=PackageURL("composer", vendor or None, short, version).to_string(),
                    licenses=[str(x) for x in lic] if isinstance(lic, list) else [],
                )
            )
        return Detection(packages=pkgs)


DETECTORS = [ComposerDetector()]
