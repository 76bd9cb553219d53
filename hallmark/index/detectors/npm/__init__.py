"""npm: every ``node_modules/**/package.json``, plus ``package-lock.json`` (v1-v3) and ``yarn.lock`` v1.

Lock files name what an app *would* install; they are reported because images often ship an
app with its lock file but a bundled (not ``node_modules``) build.
"""

from __future__ import annotations

import json
import re
from typing import Any

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector
from hallmark.model import Package


def npm_purl(name: str, version: str) -> str:
    ns, _, short = name.rpartition("/")
    return PackageURL("npm", ns or None, short, version).to_string()


def _license(meta: dict[str, Any]) -> list[str]:
    lic = meta.get("license")
    if isinstance(lic, str) and lic:
        return [lic]
    if isinstance(lic, dict) and isinstance(lic.get("type"), str):
        return [lic["type"]]
    lics = meta.get("licenses")
    if isinstance(lics, list):
        return [x["type"] if isinstance(x, dict) else str(x) for x in lics if x]
    return []


def _pkg(name: str, version: str, licenses: list[str] | None = None, where: str = "") -> Package:
    return Package(
        name=name,
        version=version,
        ecosystem="npm",
        purl=npm_purl(name, version),
        licenses=licenses or [],
        paths=[where],
    )


class NpmDetector(Detector):
    name = "npm"
    patterns = ("*node_modules/*/package.json", "*package-lock.json", "*npm-shrinkwrap.json", "*yarn.lock")

    def detect(self, path: str, data: bytes) -> Detection | None:
        if path.endswith("yarn.lock"):
            return Detection(packages=_yarn(data))
        try:
            doc = json.loads(data)
        except ValueError:
            return Detection(warnings=[f"/{path}: not valid JSON"])
        if not isinstance(doc, dict):
            return None
        if path.endswith("package.json"):
            # only a package's own manifest: node_modules/<name>/package.json or node_modules/@s/<name>/...
            if not re.search(r"node_modules/(@[^/]+/)?[^/@][^/]*/package\.json$", path):
                return None
            name, version = doc.get("name"), doc.get("version")
            if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
                return None
            return Detection(packages=[_pkg(name, version, _license(doc))])
        return Detection(packages=_lock(doc))


def _lock(doc: dict[str, Any]) -> list[Package]:
    out = []
    packages = doc.get("packages")
    if isinstance(packages, dict):  # lockfile v2/v3
        for key, meta in packages.items():
            if not key or not isinstance(meta, dict) or meta.get("link"):
                continue
            name = meta.get("name") or key.rpartition("node_modules/")[2]
            version = meta.get("version")
            if isinstance(name, str) and isinstance(version, str) and name and version:
                out.append(_pkg(name, version, _license(meta)))
        return out
    stack = [doc.get("dependencies") or {}]  # lockfile v1: nested "dependencies"
    while stack:
        deps = stack.pop()
        if not isinstance(deps, dict):
            continue
        for name, meta in deps.items():
            if isinstance(meta, dict) and isinstance(meta.get("version"), str):
                out.append(_pkg(name, meta["version"]))
                stack.append(meta.get("dependencies") or {})
    return out


def _yarn(data: bytes) -> list[Package]:
    """yarn v1 lock: ``"name@range", name@range2:`` header then an indented ``version "x"`` line."""
    out = []
    name = None
    for line in data.decode("utf-8", "replace").splitlines():
        if line and not line.startswith((" ", "#")) and line.endswith(":"):
            first = line[:-1].split(",")[0].strip().strip('"')
            name = first[: first.rfind("@")] if first.rfind("@") > 0 else None
        elif name and line.strip().startswith("version "):
            version = line.strip()[len("version ") :].strip().strip('"')
            out.append(_pkg(name, version))
            name = None
    return out


DETECTORS = [NpmDetector()]
