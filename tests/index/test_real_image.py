"""Accuracy on the real debootstrap image that ``python -m bench.sbom`` builds (skipped until it is cached)."""

from __future__ import annotations

import shutil

import pytest

from hallmark.index import index_source
from hallmark.oci import open_source

bench = pytest.importorskip("bench.sbom")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (bench.LAYOUT / "index.json").exists() or shutil.which("umoci") is None,
        reason="run `python -m bench.sbom` once to build the cached fixture",
    ),
]


def test_matches_ground_truth_per_type() -> None:
    truth = bench.ground_truth()
    result = index_source(open_source(f"oci:{bench.LAYOUT}:{bench.TAG}"))
    assert result.status == "done", result.error
    found = bench.purl_pkgs([(p.purl or "", p.name, p.version) for p in result.packages])
    for kind, expected in truth.items():
        assert found.get(kind, set()) == expected, kind
    assert result.distro is not None and (result.distro.id, result.distro.version_id) == ("debian", "12")
    # the hardlinked jar whose original a later layer deleted (both peers miss it)
    log4j = next(p for p in result.packages if p.name.endswith(":log4j-core"))
    assert log4j.paths == ["/opt/java/shared/log4j.jar"]
    libc = next(p for p in result.packages if p.name == "libc6")
    assert libc.source_name == "glibc" and libc.layer == result.layers[0]
