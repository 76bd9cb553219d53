"""Rust binaries built with ``cargo auditable``: zlib-compressed JSON in the ``.dep-v0`` ELF section."""

from __future__ import annotations

import json
import zlib

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.index.elf import ELF_MAGIC, elf_section
from hallmark.model import Package

MAX_JSON = 8 << 20  # the section is a few KB; cap inflation so a crafted one cannot bomb us


class CargoAuditableDetector(Detector):
    name = "cargo-auditable"
    magic = (ELF_MAGIC,)

    def detect(self, path: str, data: bytes) -> Detection | None:
        section = elf_section(data, ".dep-v0")
        if section is None:
            return None
        try:
            d = zlib.decompressobj()
            raw = d.decompress(section, MAX_JSON)
            doc = json.loads(raw)
        except (zlib.error, ValueError) as exc:
            return Detection(warnings=[f"/{path}: unreadable cargo-auditable data: {exc}"])
        pkgs = []
        for p in doc.get("packages") or []:
            name, version = p.get("name"), p.get("version")
            if not isinstance(name, str) or not isinstance(version, str):
                continue
            pkgs.append(
                Package(
                    name=name,
                    version=version,
                    ecosystem="crates.io",
                    purl=PackageURL("cargo", None, name, version).to_string(),
                    type="application" if p.get("root") else "library",
                    extra={"source": p.get("source", "")},
                )
            )
        return Detection(packages=pkgs)


DETECTORS = [CargoAuditableDetector()]
