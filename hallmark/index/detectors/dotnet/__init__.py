""".NET: ``*.deps.json`` next to every published app; ``"type": "package"`` libraries are NuGet packages."""

from __future__ import annotations

import json

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.model import Package


class DepsJsonDetector(Detector):
    name = "dotnet-deps"
    patterns = ("*.deps.json",)

    def detect(self, path: str, data: bytes) -> Detection | None:
        try:
            doc = json.loads(data)
        except ValueError:
            return Detection(warnings=[f"/{path}: not valid JSON"])
        libraries = doc.get("libraries") if isinstance(doc, dict) else None
        pkgs = []
        for key, meta in (libraries or {}).items():
            if not isinstance(meta, dict) or meta.get("type") != "package" or "/" not in key:
                continue
            name, _, version = key.partition("/")
            pkgs.append(
                Package(
                    name=name,
                    version=version,
                    ecosystem="NuGet",
                    purl=PackageURL("nuget", None, name, version).to_string(),
                )
            )
        return Detection(packages=pkgs)


DETECTORS = [DepsJsonDetector()]
