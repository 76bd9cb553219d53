"""Ruby: installed gem specifications (``specifications/*.gemspec``), read with regexes, never eval'd."""

from __future__ import annotations

import re

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.model import Package

_STR = r"""["']([^"']+)["'](?:\.freeze)?"""


class GemspecDetector(Detector):
    name = "gemspec"
    patterns = ("*/specifications/*.gemspec",)

    def detect(self, path: str, data: bytes) -> Detection | None:
        text = data.decode("utf-8", "replace")
        name = re.search(r"\.name\s*=\s*" + _STR, text)
        version = re.search(r"\.version\s*=\s*(?:Gem::Version\.new\()?" + _STR, text)
        if not name or not version:
            return None
        licenses: list[str] = []
        m = re.search(r"\.licenses?\s*=\s*\[?([^\n\]]*)", text)
        if m:
            licenses = re.findall(r"""["']([^"']+)["']""", m.group(1))
        pkg = Package(
            name=name.group(1),
            version=version.group(1),
            ecosystem="RubyGems",
            purl=PackageURL("gem", None, name.group(1), version.group(1)).to_string(),
            licenses=licenses,
        )
        return Detection(packages=[pkg])


DETECTORS = [GemspecDetector()]
