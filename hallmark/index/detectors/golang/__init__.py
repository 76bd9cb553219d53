"""Go binaries: the build info every Go >= 1.18 binary embeds (main module, deps, toolchain).

The format (``\\xff Go buildinf:`` header, inline varint-prefixed strings, module text between
16-byte sentinels) is Go's own and tiny; reading it here avoids shelling out to ``go version -m``.
Go < 1.18 binaries store pointers instead; they are reported as a warning, not parsed.
"""

from __future__ import annotations

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.index.elf import ELF_MAGIC
from hallmark.model import Package

BUILDINFO_MAGIC = b"\xff Go buildinf:"


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad varint")


def read_buildinfo(data: bytes) -> tuple[str, str] | None:
    """(go version, module info text) from a binary, None if it has no (readable) build info."""
    pos = data.find(BUILDINFO_MAGIC)
    while pos >= 0 and pos % 16:
        pos = data.find(BUILDINFO_MAGIC, pos + 1)
    if pos < 0 or len(data) < pos + 32:
        return None
    flags = data[pos + 15]
    if not flags & 2:
        raise ValueError("Go < 1.18 build info (pointer format) is not read")
    n, p = _uvarint(data, pos + 32)
    version = data[p : p + n].decode("utf-8", "replace")
    n, p = _uvarint(data, p + n)
    mod = data[p : p + n]
    if len(mod) >= 33 and mod[-17] == ord("\n"):
        mod = mod[16:-16]
    return version, mod.decode("utf-8", "replace")


def golang_purl(module: str, version: str) -> str:
    ns, _, name = module.rpartition("/")
    return PackageURL("golang", ns or None, name, version or None).to_string()


def parse_modinfo(go_version: str, modinfo: str) -> list[Package]:
    pkgs: list[Package] = []
    last: Package | None = None
    for line in modinfo.splitlines():
        parts = line.split("\t")
        if parts[0] in ("mod", "dep") and len(parts) >= 3:
            path, version = parts[1], parts[2]
            last = Package(
                name=path,
                version=version,
                ecosystem="Go",
                purl=golang_purl(path, version),
                type="application" if parts[0] == "mod" else "library",
            )
            pkgs.append(last)
        elif parts[0] == "=>" and last is not None and len(parts) >= 2:  # replace directive
            if parts[1].startswith((".", "/")):  # a local folder: no module version to match, keep the original
                last.extra["replaced_by"] = parts[1]
                continue
            last.extra["replaced"] = f"{last.name}@{last.version}"
            last.name, last.version = parts[1], parts[2] if len(parts) > 2 else ""
            last.purl = golang_purl(last.name, last.version)
    if go_version.startswith("go"):
        v = go_version[2:].split(" ")[0].split("-")[0]
        pkgs.append(Package(name="stdlib", version=v, ecosystem="Go", purl=golang_purl("stdlib", v), type="stdlib"))
    return pkgs


class GoBinaryDetector(Detector):
    name = "go-binary"
    magic = (ELF_MAGIC,)

    def detect(self, path: str, data: bytes) -> Detection | None:
        try:
            info = read_buildinfo(data)
        except ValueError as exc:
            return Detection(warnings=[f"/{path}: {exc}"])
        if info is None:
            return None
        return Detection(packages=parse_modinfo(*info))


DETECTORS = [GoBinaryDetector()]
