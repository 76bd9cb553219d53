"""Fixtures: a tiny advisory folder (one real PyPI OSV record copied from the shared snapshot
at test time, plus a hand-written Debian tracker list) and small synthetic OCI layouts."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from hallmark.advisories.index import AdvisoryIndex, load_snapshot
from hallmark.index import IndexResult, index_image
from hallmark.pipeline.vuln_report import make_report
from tests.index.imagebuilder import Image, Layer, build_image, dist_info, write_layout

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared" / "data"
PYPI_ZIP = SHARED / "osv" / "PyPI" / "all.zip"
# django 4.2 <= v < 4.2.26 (and 5.1, 5.2 branches); CVSS 3.1 7.5 (high); alias CVE-2025-64458
RECORD = "PYSEC-2025-107"

# Debian tracker format (as in security-tracker data/DSA/list); hand-written, made-up ids.
DSA_LIST = """[01 Mar 2023] DSA-9999-1 openssl - security update
\t{CVE-2099-0001}
\t[bullseye] - openssl 1.1.1n-0+deb11u5
[02 Feb 2023] DSA-9998-1 zlib - security update
\t{CVE-2099-0002}
\t[bullseye] - zlib <not-affected> (vulnerable code not present)
"""

OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux {v}"\nNAME="Debian GNU/Linux"\nVERSION_ID="{v}"\nID=debian\n'
DPKG = """Package: libssl1.1
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 1.1.1n-0+deb11u3

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib
Version: 1:1.2.11.dfsg-2+deb11u2
"""


def debian_layer(release: str, extra: dict[str, str | bytes] | None = None) -> Layer:
    layer = (
        Layer()
        .file("etc/os-release", OS_RELEASE.format(v=release))
        .file("var/lib/dpkg/status", DPKG)
        .file("usr/lib/python3/dist-packages/Django-4.2.20.dist-info/METADATA", dist_info("Django", "4.2.20"))
    )
    for path, data in (extra or {}).items():
        layer.file(path, data)
    return layer


@pytest.fixture(scope="session")
def db_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PYPI_ZIP.is_file():
        pytest.skip(f"shared advisory snapshot not found at {SHARED}")
    root = tmp_path_factory.mktemp("advdb")
    (root / "osv" / "PyPI").mkdir(parents=True)
    with zipfile.ZipFile(PYPI_ZIP) as src, zipfile.ZipFile(root / "osv" / "PyPI" / "all.zip", "w") as dst:
        dst.writestr(f"{RECORD}.json", src.read(f"{RECORD}.json"))
    tracker = root / "debian" / "security-tracker" / "data" / "DSA"
    tracker.mkdir(parents=True)
    (tracker / "list").write_text(DSA_LIST)
    return root


@pytest.fixture(scope="session")
def advisory_index(db_dir: Path) -> AdvisoryIndex:
    return load_snapshot(db_dir)


def layout(root: Path, image: Image, tag: str = "latest") -> str:
    write_layout(str(root), {tag: image})
    return f"oci:{root}:{tag}"


@pytest.fixture(scope="session")
def bullseye_image() -> Image:
    return build_image([(debian_layer("11").tar_bytes(), "gzip")])


@pytest.fixture(scope="session")
def bookworm_image() -> Image:
    return build_image([(debian_layer("12").tar_bytes(), "gzip")])


def inventory(image: Image) -> IndexResult:
    res = index_image(image.manifest, image.config, image.open_layer)
    assert res.status == "done", res.error
    return res


@pytest.fixture(scope="session")
def bullseye_report(bullseye_image: Image, advisory_index: AdvisoryIndex) -> dict[str, Any]:
    meta = {"id": 7, "created_at": "2026-01-01T00:00:00Z"}
    return make_report(inventory(bullseye_image), (meta, advisory_index), "example.test/app:1", bullseye_image.digest)
