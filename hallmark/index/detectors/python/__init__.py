"""Python: installed distributions (``*.dist-info/METADATA``, ``*.egg-info``) anywhere in the image.

Matching by path anywhere catches site-packages, venvs and ``pip --target`` folders alike.
Names are PEP 503-normalised; the reported path is the ``.dist-info``/``.egg-info`` folder.
"""

from __future__ import annotations

import posixpath
from email.parser import BytesHeaderParser

from packageurl import PackageURL

from hallmark.index.detect import Detection, Detector, pep503
from hallmark.model import Package


def licenses_from_metadata(msg: dict[str, str], classifiers: list[str]) -> list[str]:
    """License-Expression (PEP 639) if set, else a short License field, else trove classifiers."""
    if msg.get("License-Expression"):
        return [msg["License-Expression"].strip()]
    lic = (msg.get("License") or "").strip()
    if lic and lic.upper() != "UNKNOWN" and len(lic) <= 80 and "\n" not in lic:
        return [lic]
    out = [c.split("::")[-1].strip() for c in classifiers if c.startswith("License ::")]
    return [x for x in out if x and x != "OSI Approved"]


class PythonDetector(Detector):
    name = "python"
    patterns = ("*.dist-info/METADATA", "*.egg-info/PKG-INFO", "*.egg-info")

    def detect(self, path: str, data: bytes) -> Detection | None:
        msg = BytesHeaderParser().parsebytes(data)
        name, version = msg.get("Name"), msg.get("Version")
        if not name or not version:
            return None
        classifiers = [str(c) for c in msg.get_all("Classifier") or []]
        fields = {k: str(v) for k, v in msg.items()}
        norm = pep503(str(name).strip())
        version = str(version).strip()
        pkg = Package(
            name=norm,
            version=version,
            ecosystem="PyPI",
            purl=PackageURL("pypi", None, norm, version).to_string(),
            licenses=licenses_from_metadata(fields, classifiers),
            paths=[] if path.endswith(".egg-info") else [posixpath.dirname(path)],
        )
        return Detection(packages=[pkg])


DETECTORS = [PythonDetector()]
