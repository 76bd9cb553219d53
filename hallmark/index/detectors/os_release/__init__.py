"""The distribution, from os-release (freedesktop spec) with lsb-release and */-release fallbacks."""

from __future__ import annotations

import re
import shlex

from hallmark.index.detect import Detection, Detector
from hallmark.model import Distro


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines with shell quoting, per os-release(5)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        out[key.strip()] = parts[0] if parts else ""
    return out


class OsReleaseDetector(Detector):
    name = "os-release"
    patterns = (
        "etc/os-release",
        "usr/lib/os-release",
        "etc/lsb-release",
        "etc/alpine-release",
        "etc/debian_version",
        "etc/redhat-release",
        "etc/centos-release",
        "etc/system-release",
    )

    def detect(self, path: str, data: bytes) -> Detection | None:
        text = data.decode("utf-8", "replace")
        if path.endswith("os-release"):
            kv = parse_os_release(text)
            if not kv.get("ID"):
                return None
            distro = Distro(
                id=kv["ID"].lower(),
                version_id=kv.get("VERSION_ID") or None,
                codename=kv.get("VERSION_CODENAME") or None,
                pretty_name=kv.get("PRETTY_NAME") or None,
            )
            return Detection(distro=distro, priority=0 if path.startswith("etc/") else 1)
        if path == "etc/lsb-release":
            kv = parse_os_release(text)
            if not kv.get("DISTRIB_ID"):
                return None
            distro = Distro(
                id=kv["DISTRIB_ID"].lower(),
                version_id=kv.get("DISTRIB_RELEASE") or None,
                codename=kv.get("DISTRIB_CODENAME") or None,
                pretty_name=kv.get("DISTRIB_DESCRIPTION") or None,
            )
            return Detection(distro=distro, priority=2)
        first = text.strip().splitlines()[0] if text.strip() else ""
        if path == "etc/alpine-release" and first:
            return Detection(distro=Distro("alpine", ".".join(first.split(".")[:2]), None, None), priority=3)
        if path == "etc/debian_version" and first:
            major = first.split(".")[0]
            return Detection(distro=Distro("debian", major if major.isdigit() else None), priority=4)
        m = re.match(r"(.+?) (?:Linux )?release (\d+(?:\.\d+)?)", first)
        if m:
            ident = {"Red Hat Enterprise": "rhel", "CentOS": "centos", "Rocky": "rocky", "AlmaLinux": "almalinux"}
            did = next((v for k, v in ident.items() if first.startswith(k)), m.group(1).split()[0].lower())
            return Detection(distro=Distro(did, m.group(2).split(".")[0], None, first), priority=3)
        return None


DETECTORS = [OsReleaseDetector()]
