"""Java archives (jar/war/ear/...): ``META-INF/maven/**/pom.properties``, else ``MANIFEST.MF``; nested jars.

Nested archives (``WEB-INF/lib``, Spring Boot ``BOOT-INF/lib``) are opened in memory, bounded
in depth and size, and their bytes count against the image's nested-archive cap and the job's
memory (:class:`hallmark.index.limits.Budget`); their paths read ``outer.war:WEB-INF/lib/inner.jar``
as Syft writes them.
Hardlinked jars are found because the engine hands every hardlink its target's results.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.index.limits import current_budget, current_limits
from hallmark.model import Package

ARCHIVE_EXT = (".jar", ".war", ".ear", ".jpi", ".hpi", ".par", ".sar", ".nar", ".kar", ".rar")
MAX_NESTED_BYTES = 256 << 20
MAX_RATIO = 200


def parse_properties(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def parse_manifest(text: str) -> dict[str, str]:
    """MANIFEST.MF main section; continuation lines start with one space."""
    out: dict[str, str] = {}
    key = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            break  # end of the main section
        if line.startswith(" ") and key:
            out[key] += line[1:]
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            out[key] = value.strip()
    return out


def maven_pkg(group: str | None, artifact: str, version: str, where: str, licenses: list[str]) -> Package:
    return Package(
        name=f"{group}:{artifact}" if group else artifact,
        version=version,
        ecosystem="Maven",
        purl=PackageURL("maven", group or None, artifact, version).to_string(),
        licenses=licenses,
        paths=[where],
    )


def _from_filename(filename: str) -> tuple[str, str] | None:
    m = re.match(r"(.+?)-(\d[\w.\-+]*)\.\w+$", posixpath.basename(filename))
    return (m.group(1), m.group(2)) if m else None


def scan_archive(data: bytes, where: str, depth: int, warnings: list[str]) -> list[Package]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        warnings.append(f"/{where}: not a readable archive: {exc}")
        return []
    pkgs: list[Package] = []
    with zf:
        infos = zf.infolist()
        manifest: dict[str, str] = {}
        for info in infos:
            if info.file_size > MAX_NESTED_BYTES or info.file_size > MAX_RATIO * max(info.compress_size, 1024):
                warnings.append(f"/{where}:{info.filename}: skipped by the size/ratio guard")
                continue
            name = info.filename
            try:
                if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
                    props = parse_properties(zf.read(info).decode("utf-8", "replace"))
                    if props.get("artifactId") and props.get("version"):
                        pkgs.append(maven_pkg(props.get("groupId"), props["artifactId"], props["version"], where, []))
                elif name.upper() == "META-INF/MANIFEST.MF":
                    manifest = parse_manifest(zf.read(info).decode("utf-8", "replace"))
                elif name.lower().endswith(ARCHIVE_EXT) and not info.is_dir():
                    max_depth = current_limits().max_nested_archive_depth
                    if depth >= max_depth:
                        warnings.append(f"/{where}:{name}: archives nested deeper than {max_depth}")
                        continue
                    pkgs.extend(_scan_nested(zf, info, f"{where}:{name}", depth + 1, warnings))
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
                warnings.append(f"/{where}:{name}: unreadable: {exc}")
        own = [p for p in pkgs if p.paths == [where]]
        licenses = [manifest["Bundle-License"]] if manifest.get("Bundle-License") else []
        for p in own:
            p.licenses = p.licenses or licenses
        if not own:
            artifact = manifest.get("Implementation-Title") or manifest.get("Bundle-Name")
            version = manifest.get("Implementation-Version") or manifest.get("Bundle-Version")
            group = manifest.get("Implementation-Vendor-Id")
            guessed = _from_filename(where.rsplit(":", 1)[-1])
            if guessed and (not artifact or not version or " " in artifact):
                artifact, version = guessed
            if artifact and version:
                pkgs.append(maven_pkg(group, artifact, version, where, licenses))
    return pkgs


def _scan_nested(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, depth: int, warnings: list[str]
) -> list[Package]:
    """Open one archive inside another, charging its size before it is read (it is held in memory)."""
    budget = current_budget()
    if budget is None:
        return scan_archive(zf.read(info), where, depth, warnings)
    cap = budget.limits.max_nested_archive_bytes
    budget.charge("nested archive bytes", info.file_size, cap, "bytes of archives nested in archives")
    with budget.holding(info.file_size):
        return scan_archive(zf.read(info), where, depth, warnings)


class JavaArchiveDetector(Detector):
    name = "java-archive"
    patterns = tuple(f"*{ext}" for ext in ARCHIVE_EXT)

    def detect(self, path: str, data: bytes) -> Detection | None:
        warnings: list[str] = []
        pkgs = scan_archive(data, path, 0, warnings)
        for p in pkgs:  # make paths relative to this file, as the engine expects
            p.paths = [x[len(path) :] for x in p.paths]
        return Detection(packages=pkgs, warnings=warnings)


DETECTORS = [JavaArchiveDetector()]
