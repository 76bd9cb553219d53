"""Checks against the real feed snapshot in ``<repo>/../shared/data`` (skipped when absent)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest

from hallmark.advisories import debian_tracker
from hallmark.advisories.index import AdvisoryIndex, load_snapshot
from hallmark.advisories.matcher import COULD_NOT_COMPARE, match_inventory
from hallmark.advisories.osv import Verdict, load_osv_zip
from hallmark.advisories.versions import UnparseableVersion, scheme
from hallmark.model import Distro, Package

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "osv").is_dir(), reason="shared/data snapshot not present")

# Listed versions the range evaluator places outside the record's own ranges. Each is a
# data inconsistency in the record, not an evaluator choice:
#  - PYSEC-2023-61 (django): ranges start at "introduced 3.2" / "introduced 4.2", but the list also
#    names the pre-releases 3.2a1/b1/rc1 and 4.2a1/b1/rc1, which PEP 440 orders *before* 3.2 / 4.2.
#  - PYSEC-2021-114 (wagtail): two ranges ([2.11, 2.11.7) and [0, 2.11.6)) were merged into one events
#    list; read as one OSV timeline (as the spec requires) 2.11.6 is closed by "fixed 2.11.6".
KNOWN_DISAGREEMENTS = {
    ("PYSEC-2023-61", "django", v) for v in ("3.2a1", "3.2b1", "3.2rc1", "4.2a1", "4.2b1", "4.2rc1")
} | {("PYSEC-2021-114", "wagtail", "2.11.6")}


def test_osv_versions_lists_agree_with_ranges() -> None:
    """Every explicit ``versions`` entry must fall inside the record's own ranges."""
    pep440 = scheme("pep440")
    counts: Counter[str] = Counter()
    disagreements: set[tuple[str, str, str]] = set()
    for zpath in sorted((DATA / "osv").glob("*/all.zip")):
        res = load_osv_zip(zpath)
        for entry in res.affected:
            if not entry.versions or not entry.ranges:
                continue
            ranges_only = dataclasses.replace(entry, versions=frozenset(), version_keys=())
            broken = any(r.broken for r in entry.ranges)
            for v in entry.versions:
                counts["listed"] += 1
                verdict = ranges_only.evaluate(v)
                if verdict is Verdict.AFFECTED:
                    counts["agree"] += 1
                elif verdict is Verdict.UNKNOWN:
                    # Only acceptable when something really cannot be ordered ...
                    if broken:
                        counts["range bound not parseable"] += 1
                    else:
                        with pytest.raises(UnparseableVersion):
                            entry.scheme.key(v)  # type: ignore[union-attr]
                        counts["listed version not parseable"] += 1
                    # ... and then the full evaluation still reports it (exact string in the list).
                    assert entry.evaluate(v) is Verdict.AFFECTED
                else:
                    disagreements.add((entry.advisory.id, entry.name, v))
    print(f"\nOSV versions check: {dict(counts)}; disagreements: {len(disagreements)}")
    assert counts["listed"] > 500_000
    assert disagreements == KNOWN_DISAGREEMENTS
    # listed versions that are not PEP 440 at all ("trunk", "0.8.4p1") can only be matched by string
    assert pep440.name == "pep440"


def _header_count(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if re.match(r"^\[\d", line))


@pytest.mark.parametrize("kind", ["DSA", "DLA"])
def test_parse_full_tracker_lists(kind: str) -> None:
    path = DATA / "debian" / "security-tracker" / "data" / kind / "list"
    advisories, affected, stats = debian_tracker.load_list(path)
    assert len(advisories) == _header_count(path)
    structural = {k: v for k, v in stats.skipped.items() if k != "unparseable fixed version"}
    assert structural == {}
    releases = Counter(e.ecosystem for e in affected)
    assert set(releases) <= {f"Debian:{n}" for n in debian_tracker.CODENAMES.values()}
    if kind == "DSA":
        by_id = {a.id: a for a in advisories}
        assert by_id["DSA-5380-1"].related == ("CVE-2023-1393",)
        [x] = [e for e in affected if e.advisory.id == "DSA-5380-1"]
        assert (x.ecosystem, x.name, x.fixed_versions()) == ("Debian:11", "xorg-server", ["2:1.20.11-1+deb11u6"])
        # DSA-423's "fixed version" is a package name: the entry exists but can only say "cannot compare"
        assert stats.skipped["unparseable fixed version"] == 1


def test_tracker_lists_agree_with_osv_debian_conversion() -> None:
    """The OSV Debian zip was converted from the same lists: fixed versions must match."""
    tracker: dict[tuple[str, str, str], list[str]] = {}
    for kind in ("DSA", "DLA"):
        _, aff, _ = debian_tracker.load_list(DATA / "debian" / "security-tracker" / "data" / kind / "list")
        for e in aff:
            if e.status_hint is None:
                tracker.setdefault((e.advisory.id, e.ecosystem, e.name), []).extend(e.fixed_versions())
    osv = load_osv_zip(DATA / "osv" / "Debian" / "all.zip")
    compared = 0
    for e in osv.affected:
        k = (e.advisory.id, e.ecosystem, e.name)
        if k in tracker:
            # the conversion kept one stray leading space (DSA-2798-1 curl); dpkg parsing strips it
            assert sorted({v.strip() for v in e.fixed_versions()}) == sorted(set(tracker[k])), k
            compared += 1
    assert compared > 5000  # not vacuous: thousands of (advisory, release, package) pairs compared


def test_security_support_tables() -> None:
    notices = debian_tracker.load_security_support(DATA / "debian" / "security-support")
    wpe = [n for n in notices if n.package == "wpewebkit" and n.release == "12"]
    assert wpe and wpe[0].date == "2023-05-09" and wpe[0].last_version == "2.38.6-1"
    assert any(n.kind == "limited" and n.package == "golang.*" for n in notices)


@pytest.fixture(scope="module")
def index() -> AdvisoryIndex:
    return load_snapshot(DATA)


def test_debian_matching_by_source_and_release(index: AdvisoryIndex) -> None:
    pkgs = [
        Package("xserver-xorg-core", "2:1.20.11-1+deb11u5", "Debian", source_name="xorg-server", layer="sha256:l1"),
        Package("libssl1.1", "1.1.1n-0+deb11u4", "Debian", source_name="openssl"),
    ]
    res = match_inventory(index, pkgs, Distro("debian", "11", "bullseye"))
    ids = {(f.advisory_id, f.package) for f in res.findings}
    assert ("DSA-5380-1", "xserver-xorg-core") in ids
    f = next(f for f in res.findings if f.advisory_id == "DSA-5380-1")
    assert f.status == "fixed" and f.fixed_versions == ["2:1.20.11-1+deb11u6"] and f.layer == "sha256:l1"
    assert "CVE-2023-1393" in f.aliases
    fixed = match_inventory(index, [dataclasses.replace(pkgs[0], version="2:1.20.11-1+deb11u6")],
                            Distro("debian", "11"))  # fmt: skip
    assert "DSA-5380-1" not in {x.advisory_id for x in fixed.findings}
    assert res.unsupported_releases == []


def test_release_without_data_is_reported(index: AdvisoryIndex) -> None:
    pkgs = [Package("xserver-xorg-core", "2:21.1.7-3", "Debian", source_name="xorg-server")]
    res = match_inventory(index, pkgs, Distro("debian", "12", "bookworm"))
    assert res.findings == [] and res.unsupported_releases == ["Debian:12"] and not res.complete


def test_unparseable_installed_version_is_not_safe(index: AdvisoryIndex) -> None:
    res = match_inventory(index, [Package("Django", "not-a-version", "PyPI")])
    assert res.findings and all(f.status == COULD_NOT_COMPARE for f in res.findings)


def test_kev_flag_and_go_stdlib(index: AdvisoryIndex) -> None:
    assert index.kev is not None
    # pick any Debian 11 advisory that names a KEV CVE, and install a version below every fix
    entry = next(e for (eco, _), es in index.by_package.items() if eco == "Debian:11" for e in es
                 if any(c in index.kev.entries for c in e.advisory.cves) and e.fixed_versions())  # fmt: skip
    res = match_inventory(index, [Package(entry.name, "0.0-0", "Debian")], Distro("debian", "11"))
    f = next(f for f in res.findings if f.advisory_id == entry.advisory.id)
    assert f.kev and f.status == "fixed"
    go = match_inventory(index, [Package("stdlib", "go1.20.1", "Go", type="stdlib")])
    assert go.findings and all(f.ecosystem == "Go" for f in go.findings)
    patched = match_inventory(index, [Package("stdlib", "go1.99.0", "Go", type="stdlib")])
    assert len(patched.findings) < len(go.findings)
