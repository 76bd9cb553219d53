"""The compiled on-disk advisory index gives the same findings as the in-memory index."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hallmark.advisories import compiled, debian_tracker
from hallmark.advisories.compiled import CompiledIndex, compile_index, open_folder, open_or_compile
from hallmark.advisories.index import AdvisoryIndex, AdvisorySource, load_snapshot
from hallmark.advisories.matcher import MatchResult, match_inventory
from hallmark.advisories.osv import ImportStats, parse_osv_zip
from hallmark.model import Distro, Package
from tests.advisories.test_severity import BULLSEYE, VECTOR_98, bullseye_inventory

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _match(idx: AdvisorySource, pkgs: list[Package], distro: Distro | None) -> dict[str, Any]:
    res: MatchResult = match_inventory(idx, pkgs, distro)
    return {
        "findings": [f.as_dict() for f in res.findings],
        "coverage": res.coverage,
        "unsupported": res.unsupported_releases,
        "support": [dataclasses.asdict(n) for n in res.support_notices],
    }


OSV = [
    {  # versions list + ECOSYSTEM range + a GIT range (skipped), own CVSS vector
        "id": "PYSEC-1",
        "modified": "2024-01-01T00:00:00Z",
        "aliases": ["CVE-2099-0001"],
        "severity": [{"type": "CVSS_V3", "score": VECTOR_98}],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "Demo_Pkg"},
                "ranges": [
                    {"type": "GIT", "repo": "https://x", "events": [{"introduced": "abc"}]},
                    {"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "1.5"}, {"introduced": "2.0"}]},
                ],
                "versions": ["0.9-custom", "1.0", "1.1"],
            }
        ],
    },
    {  # last_affected and limit, SEMVER on npm
        "id": "NSWG-ECO-1",
        "modified": "2024-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": "left"},
                "ranges": [
                    {"type": "SEMVER", "events": [{"introduced": "0"}, {"last_affected": "1.2.0"}, {"limit": "3.0.0"}]}
                ],
            }
        ],
    },
    {  # a fixed version that does not parse: could_not_compare, never silence
        "id": "GHSA-xxxx-yyyy-zzzz",
        "modified": "2024-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "broken"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "not a version!"}]}],
            }
        ],
    },
    {  # OSV conversion of DSA-9001-1: loads first, the tracker lends its urgency
        "id": "DSA-9001-1",
        "modified": "2024-01-01T00:00:00Z",
        "related": ["CVE-2099-0001"],
        "affected": [
            {
                "package": {"ecosystem": "Debian:11", "name": "foo"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0-2"}]}],
            }
        ],
    },
]
DSA = """\
[01 Mar 2023] DSA-9001-1 foo - security update
\t{CVE-2099-0001}
\t[bullseye] - foo 1.0-2 (low)
[02 Mar 2023] DSA-9002-1 foo - security update
\t{CVE-2099-0002 CVE-2099-0001}
\t[bullseye] - foo <no-dsa> (Minor issue)
"""
SUPPORT = [
    debian_tracker.SupportNotice("foo", "ended", "11", "1.0-2", "2024-01-01", "gone"),
    debian_tracker.SupportNotice("fo.*", "limited", None, details="limited support"),
]


def small_index() -> AdvisoryIndex:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for r in OSV:
            zf.writestr(f"{r['id']}.json", orjson.dumps(r))
    idx = AdvisoryIndex()
    res = parse_osv_zip(io.BytesIO(buf.getvalue()), "fixture.zip")
    idx.add(res.advisories, res.affected, res.stats)
    stats = ImportStats("DSA/list")
    idx.add(*debian_tracker.tracker_to_affected(debian_tracker.parse_list(DSA.splitlines(True), stats), stats), stats)
    idx.support = list(SUPPORT)
    idx.epss = {"CVE-2099-0001": 0.25}
    return idx


INVENTORIES = [
    (None, [Package(n, v, "PyPI") for n, v in [("demo-pkg", "0.9-custom"), ("Demo.Pkg", "1.2"), ("demo_pkg", "2.5")]]),
    (None, [Package("demo-pkg", "1.5", "PyPI"), Package("broken", "1.0", "PyPI"), Package("left", "1.1.0", "npm")]),
    (None, [Package("left", "2.0.0", "npm"), Package("left", "3.1.0", "npm"), Package("other", "1", "Go")]),
    (BULLSEYE, [Package("libfoo1", "1.0-1", "Debian", source_name="foo", layer="sha256:l1", purl="pkg:deb/x")]),
    (Distro("debian", "12"), [Package("libfoo1", "1.0-1", "Debian", source_name="foo")]),
]


@pytest.mark.parametrize("case", range(len(INVENTORIES)))
def test_small_feeds_same_result(tmp_path: Path, case: int) -> None:
    idx = small_index()
    ci = CompiledIndex(compile_index(idx, tmp_path / "c.sqlite"))
    distro, pkgs = INVENTORIES[case]
    assert _match(ci, pkgs, distro) == _match(idx, pkgs, distro)
    assert bool(_match(ci, pkgs, distro)["findings"]) is (case not in (2, 4))  # 2: outside the ranges; 4: no data


def test_compiled_keeps_what_the_index_derives(tmp_path: Path) -> None:
    idx = small_index()
    ci = CompiledIndex(compile_index(idx, tmp_path / "c.sqlite"))
    found = {x.advisory_id: x for x in match_inventory(ci, [Package("foo", "1.0-1", "Debian")], BULLSEYE).findings}
    f, dsa2 = found["DSA-9001-1"], found["DSA-9002-1"]
    assert f.epss == 0.25 and f.severity_source == "debian_urgency"
    assert (dsa2.status, dsa2.severity_source, dsa2.severity_record) == ("wont_fix", "related_cvss", "PYSEC-1")
    assert [s.source for s in ci.imports] == ["fixture.zip", "DSA/list"]
    assert ci.covers("PyPI") and ci.covers("Debian:11") and not ci.covers("Debian:12")


def test_other_format_or_damaged_file_is_rebuilt(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    (folder / "debian" / "security-tracker" / "data" / "DSA").mkdir(parents=True)
    (folder / "debian" / "security-tracker" / "data" / "DSA" / "list").write_text(DSA)
    first = open_or_compile(folder)
    assert isinstance(first, AdvisoryIndex)  # loaded in memory once, compiled for next time
    path = folder / compiled.FILE_NAME
    assert isinstance(open_or_compile(folder), CompiledIndex)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (orjson.dumps(compiled.FORMAT + 1),))
    db.commit()
    db.close()
    with pytest.raises(compiled.CompiledIndexError):
        CompiledIndex(path)
    assert isinstance(open_or_compile(folder), AdvisoryIndex)
    assert isinstance(open_or_compile(folder), CompiledIndex)
    path.write_bytes(b"not sqlite at all" * 100)
    assert isinstance(open_or_compile(folder), AdvisoryIndex)


def test_folder_cache_follows_the_feed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "db"
    lst = folder / "debian" / "security-tracker" / "data" / "DSA" / "list"
    lst.parent.mkdir(parents=True)
    lst.write_text(DSA)
    assert isinstance(open_folder(folder), AdvisoryIndex)
    again = open_folder(folder)
    assert isinstance(again, CompiledIndex)
    pkgs = [Package("foo", "1.0-1", "Debian")]
    assert {f.advisory_id for f in match_inventory(again, pkgs, BULLSEYE).findings} == {"DSA-9001-1", "DSA-9002-1"}
    lst.write_text(DSA.split("[02 Mar")[0])  # a changed feed is never answered from the old copy
    fresh = open_folder(folder)
    assert isinstance(fresh, AdvisoryIndex)
    assert {f.advisory_id for f in match_inventory(fresh, pkgs, BULLSEYE).findings} == {"DSA-9001-1"}
    assert len(list((tmp_path / "cache" / "hallmark" / "advisories").glob("*.sqlite"))) == 2


# --------------------------------------------------------------------------- real data

needs_data = pytest.mark.skipif(not (DATA / "osv").is_dir(), reason="shared/data snapshot not present")


Both = tuple[AdvisoryIndex, CompiledIndex, list[tuple[str, str, list[str]]]]
_LOADED: list[Both] = []  # the property test reads it here: hypothesis would print a fixture argument


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Both:
    if not (DATA / "osv").is_dir():
        pytest.skip("shared/data snapshot not present")
    idx = load_snapshot(DATA)
    ci = CompiledIndex(compile_index(idx, tmp_path_factory.mktemp("compiled") / "c.sqlite"))
    pool: list[tuple[str, str, list[str]]] = []
    for (eco, name), entries in sorted(idx.by_package.items()):
        versions = sorted({v for e in entries for v in (*e.fixed_versions(), *sorted(e.versions)[:3])})
        if versions:
            pool.append((eco, name, versions))
    _LOADED[:] = [(idx, ci, pool)]
    return idx, ci, pool


@needs_data
def test_debian_11_image_same_findings(both: Both) -> None:
    idx, ci, _ = both
    pkgs = bullseye_inventory()
    assert _match(ci, pkgs, BULLSEYE) == _match(idx, pkgs, BULLSEYE)
    assert len(match_inventory(ci, pkgs, BULLSEYE).findings) >= 10


def _version_near(fixed: str, draw: int) -> str:
    """The fixed version itself, or one just below / above it (to land on both sides of a bound)."""
    return [fixed, fixed + "~", fixed + ".1", fixed + "-0"][draw % 4]


@needs_data
@pytest.mark.usefixtures("both")
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_property_same_findings_for_packages_in_the_data(data: st.DataObject) -> None:
    """Any handful of packages named by the shared data, at versions around their bounds, match alike."""
    idx, ci, pool = _LOADED[0]
    picks = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=8))
    pkgs: list[Package] = []
    distro = None
    for eco, name, versions in picks:
        v = _version_near(data.draw(st.sampled_from(versions)), data.draw(st.integers(0, 3)))
        base = eco.split(":")[0]
        if base == "Debian":
            distro = Distro("debian", eco.split(":")[1])
            pkgs.append(Package(f"lib{name}", v, "Debian", source_name=name, source_version=v))
        elif base == "Alpine":
            distro = Distro("alpine", eco.split(":v")[1] + ".0")
            pkgs.append(Package(name, v, "Alpine"))
        else:
            pkgs.append(Package(name, v, eco))
    assert _match(ci, pkgs, distro) == _match(idx, pkgs, distro)
