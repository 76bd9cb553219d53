"""Tracker text and JSON formats on small hand-written fixtures (the snapshot lacks bookworm and JSON)."""

from __future__ import annotations

from hallmark.advisories import debian_tracker
from hallmark.advisories.index import AdvisoryIndex
from hallmark.advisories.matcher import match_inventory
from hallmark.advisories.osv import ImportStats
from hallmark.model import Distro, Package

LIST = """\
[10 Apr 2024] DSA-9999-1 foo - security update
\t{CVE-2024-0001 CVE-2024-0002}
\t[bookworm] - foo 1.2-3+deb12u1
\t[bullseye] - foo <not-affected> (Vulnerable code not present)
\t[buster] - foo <end-of-life>
\tNOTE: a note
[01 Apr 2024] DLA-1-1 bar - security update
\t[bullseye] - bar <unfixed> (bug #1; low)
"""

JSON = {
    "baz": {
        "CVE-2024-1000": {
            "description": "baz bug",
            "releases": {
                "bookworm": {"status": "open", "urgency": "low", "nodsa": "Minor issue", "fixed_version": None},
                "trixie": {"status": "resolved", "urgency": "low", "fixed_version": "2.0-1"},
                "bullseye": {"status": "resolved", "urgency": "low", "fixed_version": "0"},
            },
        },
        "CVE-2024-1001": {"releases": {"bookworm": {"status": "undetermined", "urgency": "not yet assigned"}}},
    }
}


def test_list_states() -> None:
    stats = ImportStats("fixture")
    parsed = list(debian_tracker.parse_list(LIST.splitlines(True), stats))
    assert [p.id for p in parsed] == ["DSA-9999-1", "DLA-1-1"]
    assert [(e.release, e.state, e.version) for e in parsed[0].entries] == [
        ("bookworm", "fixed", "1.2-3+deb12u1"),
        ("bullseye", "not-affected", None),
        ("buster", "end-of-life", None),
    ]
    assert parsed[1].entries[0].urgency == "low"
    _, aff = debian_tracker.tracker_to_affected(parsed, stats)
    got = {(e.ecosystem, e.name, e.status_hint, tuple(e.fixed_versions())) for e in aff}
    assert got == {
        ("Debian:12", "foo", None, ("1.2-3+deb12u1",)),
        ("Debian:10", "foo", "wont_fix", ()),
        ("Debian:11", "bar", None, ()),
    }


def test_tracker_json_and_statuses() -> None:
    adv, aff, stats = debian_tracker.parse_tracker_json(JSON)
    idx = AdvisoryIndex()
    idx.add(adv, aff, stats)
    res = match_inventory(idx, [Package("libbaz1", "1.0-1", "Debian", source_name="baz")], Distro("debian", "12"))
    status = {f.advisory_id: f.status for f in res.findings}
    assert status == {"CVE-2024-1000": "wont_fix", "CVE-2024-1001": "no_fix_yet"}
    trixie = match_inventory(idx, [Package("baz", "1.0-1", "Debian")], Distro("debian", "13"))
    assert [(f.status, f.fixed_versions) for f in trixie.findings] == [("fixed", ["2.0-1"])]
    bullseye = match_inventory(idx, [Package("baz", "1.0-1", "Debian")], Distro("debian", "11"))
    assert bullseye.findings == [] and bullseye.unsupported_releases == ["Debian:11"]  # "0" = never affected
