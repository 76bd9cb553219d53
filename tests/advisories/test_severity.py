"""Severity from every source, one small fixture per feed format, and the order between sources."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from hallmark.advisories import debian_tracker
from hallmark.advisories.index import AdvisoryIndex, load_snapshot
from hallmark.advisories.matcher import Finding, match_inventory
from hallmark.advisories.osv import ImportStats, parse_osv_zip
from hallmark.advisories.severity import urgency_severity
from hallmark.model import Distro, Package

BULLSEYE = Distro("debian", "11", "bullseye")
VECTOR_98 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8 critical
VECTOR_53 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"  # 5.3 medium


def _zip(records: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for r in records:
            zf.writestr(f"{r['id']}.json", orjson.dumps(r))
    return buf.getvalue()


def _osv(rid: str, eco: str, name: str, fixed: str, **kw: Any) -> dict[str, Any]:
    rng = {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
    affected: dict[str, Any] = {"package": {"ecosystem": eco, "name": name}, "ranges": [rng]}
    if "affected_db" in kw:
        affected["database_specific"] = kw.pop("affected_db")
    return {"id": rid, "modified": "2024-01-01T00:00:00Z", "affected": [affected], **kw}


def _add_osv(idx: AdvisoryIndex, records: list[dict[str, Any]]) -> None:
    res = parse_osv_zip(io.BytesIO(_zip(records)), "fixture")
    idx.add(res.advisories, res.affected, res.stats)


def _one(idx: AdvisoryIndex, pkg: Package, distro: Distro | None = None) -> Finding:
    res = match_inventory(idx, [pkg], distro)
    assert len(res.findings) == 1, res.findings
    return res.findings[0]


def test_own_cvss_vector() -> None:
    idx = AdvisoryIndex()
    _add_osv(idx, [_osv("PYSEC-1", "PyPI", "demo", "2.0", severity=[{"type": "CVSS_V3", "score": VECTOR_98}])])
    f = _one(idx, Package("demo", "1.0", "PyPI"))
    assert (f.severity, f.severity_source, f.severity_record, f.cvss_score) == ("critical", "cvss", "PYSEC-1", 9.8)


def test_rubygems_score_in_affected_database_specific() -> None:
    """The RubyGems conversion keeps ruby-advisory-db's scores per affected entry (no vector)."""
    idx = AdvisoryIndex()
    rec = _osv("GHSA-aaaa-bbbb-cccc", "RubyGems", "nokogiri", "1.13.4", affected_db={"cvss_v3": 7.5})
    _add_osv(idx, [rec])
    f = _one(idx, Package("nokogiri", "1.13.3", "RubyGems"))
    assert (f.severity, f.severity_source, f.cvss_score, f.cvss_vector) == ("high", "advisory", 7.5, None)


def test_cvss_v2_score_uses_the_v2_scale() -> None:
    idx = AdvisoryIndex()
    _add_osv(idx, [_osv("GHSA-v2v2-v2v2-v2v2", "RubyGems", "old", "2.0", affected_db={"cvss_v2": 9.3})])
    assert _one(idx, Package("old", "1.0", "RubyGems")).severity == "high"  # v2 has no "critical"


DSA_LIST = """\
[01 Mar 2023] DSA-9001-1 foo - security update
\t{CVE-2099-1001}
\t[bullseye] - foo 1.0-2 (low)
[02 Mar 2023] DSA-9002-1 bar - security update
\t{CVE-2099-1002}
\t[bullseye] - bar 1.0-2
"""


def _tracker(idx: AdvisoryIndex, text: str = DSA_LIST) -> None:
    stats = ImportStats("list")
    adv, aff = debian_tracker.tracker_to_affected(debian_tracker.parse_list(text.splitlines(True), stats), stats)
    idx.add(adv, aff, stats)


def test_debian_urgency_from_the_list() -> None:
    idx = AdvisoryIndex()
    _tracker(idx)
    f = _one(idx, Package("libfoo1", "1.0-1", "Debian", source_name="foo"), BULLSEYE)
    assert (f.severity, f.severity_source, f.severity_record, f.urgency) == ("low", "debian_urgency", None, "low")


def test_urgency_survives_the_osv_conversion_loaded_first() -> None:
    """The OSV Debian zip (converted from the same list, no urgency) loads first; its entry keeps
    the tracker's urgency for the same DSA, release and package."""
    idx = AdvisoryIndex()
    _add_osv(idx, [_osv("DSA-9001-1", "Debian:11", "foo", "1.0-2", related=["CVE-2099-1001"])])
    _tracker(idx)
    f = _one(idx, Package("libfoo1", "1.0-1", "Debian", source_name="foo"), BULLSEYE)
    assert (f.severity, f.severity_source) == ("low", "debian_urgency")


def test_debian_urgency_from_tracker_json() -> None:
    doc = {
        "foo": {
            "CVE-2099-2001": {"releases": {"bullseye": {"status": "open", "urgency": "medium**"}}},
            "CVE-2099-2002": {"releases": {"bullseye": {"status": "open", "urgency": "not yet assigned"}}},
        }
    }
    idx = AdvisoryIndex()
    idx.add(*debian_tracker.parse_tracker_json(doc))
    res = match_inventory(idx, [Package("foo", "1.0-1", "Debian")], BULLSEYE)
    got = {f.advisory_id: (f.severity, f.severity_source) for f in res.findings}
    assert got == {"CVE-2099-2001": ("medium", "debian_urgency"), "CVE-2099-2002": (None, None)}


@pytest.mark.parametrize(
    ("urgency", "severity"),
    [("unimportant", "low"), ("low*", "low"), ("high", "high"), ("end-of-life", None), (None, None)],
)
def test_urgency_mapping(urgency: str | None, severity: str | None) -> None:
    assert urgency_severity(urgency) == severity


def test_related_record_cvss() -> None:
    """A DSA without a rating takes the CVSS vector of another record naming its CVE (here an alias)."""
    idx = AdvisoryIndex()
    _add_osv(
        idx,
        [
            _osv(
                "PYSEC-7",
                "PyPI",
                "bar-py",
                "2.0",
                aliases=["CVE-2099-1002"],
                severity=[{"type": "CVSS_V3", "score": VECTOR_53}],
            ),
            _osv(
                "RUSTSEC-7",
                "crates.io",
                "bar-sys",
                "2.0",
                aliases=["CVE-2099-1002"],
                severity=[{"type": "CVSS_V3", "score": VECTOR_98}],
            ),
        ],
    )
    _tracker(idx)
    f = _one(idx, Package("bar", "1.0-1", "Debian"), BULLSEYE)
    assert (f.severity, f.severity_source, f.severity_record) == ("critical", "related_cvss", "RUSTSEC-7")
    assert (f.cvss_score, f.cvss_vector) == (9.8, VECTOR_98)  # the highest of the records naming the CVE


def test_order_own_then_urgency_then_related() -> None:
    idx = AdvisoryIndex()
    own = [{"type": "CVSS_V3", "score": VECTOR_53}]
    _add_osv(
        idx,
        [
            _osv("DSA-9001-1", "Debian:11", "foo", "1.0-2", related=["CVE-2099-1001"], severity=own),
            _osv(
                "PYSEC-8",
                "PyPI",
                "x",
                "1",
                aliases=["CVE-2099-1001"],
                severity=[{"type": "CVSS_V3", "score": VECTOR_98}],
            ),
        ],
    )
    _tracker(idx)  # urgency low for foo
    assert _one(idx, Package("foo", "1.0-1", "Debian"), BULLSEYE).severity_source == "cvss"

    idx2 = AdvisoryIndex()
    _add_osv(
        idx2,
        [
            _osv(
                "PYSEC-8",
                "PyPI",
                "x",
                "1",
                aliases=["CVE-2099-1001"],
                severity=[{"type": "CVSS_V3", "score": VECTOR_98}],
            )
        ],
    )
    _tracker(idx2)
    f = _one(idx2, Package("foo", "1.0-1", "Debian"), BULLSEYE)
    assert (f.severity, f.severity_source) == ("low", "debian_urgency")  # the distro's rating for its release


def test_nothing_says_unknown() -> None:
    idx = AdvisoryIndex()
    _add_osv(idx, [_osv("GO-2099-1", "Go", "example.com/m", "1.2.0")])
    f = _one(idx, Package("example.com/m", "v1.0.0", "Go"))
    assert (f.severity, f.severity_source, f.severity_record, f.cvss_score) == (None, None, None, None)


# --------------------------------------------------------------------------- real data

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

#: Source packages of a Debian 11.0 (bullseye, August 2021) minbase image, at their 11.0 versions.
BULLSEYE_11_0 = """apt 2.2.4|bash 5.1-2|bzip2 1.0.8-4|coreutils 8.32-4|dash 0.5.11+git20200708+dd9ef66-5
db5.3 5.3.28+dfsg1-0.8|debconf 1.5.77|diffutils 1:3.7-5|dpkg 1.20.9|e2fsprogs 1.46.2-2|findutils 4.8.0-1
gcc-10 10.2.1-6|glibc 2.31-13|gmp 2:6.2.1+dfsg-1|gnupg2 2.2.27-2|gnutls28 3.7.1-5|grep 3.6-1|gzip 1.10-4
krb5 1.18.3-6|libcap2 1:2.44-1|libffi 3.3-6|libgcrypt20 1.8.7-6|libgpg-error 1.38-2|libidn2 2.3.0-5
libseccomp 2.5.1-1|libselinux 3.1-3|libtasn1-6 4.16.0-2|libxcrypt 1:4.4.18-4|libzstd 1.4.8+dfsg-2.1
lz4 1.9.3-2|ncurses 6.2+20201114-2|nettle 3.7.3-1|openssl 1.1.1k-1|p11-kit 0.23.22-1|pam 1.4.0-9
pcre2 10.36-2|pcre3 2:8.39-13|perl 5.32.1-4|sed 4.7-1|shadow 1:4.8.1-1|systemd 247.3-6|tar 1.34+dfsg-1
util-linux 2.36.1-8|xz-utils 5.2.5-2|zlib 1:1.2.11.dfsg-2"""


def bullseye_inventory() -> list[Package]:
    """A real Debian 11.0 package set (shared with the compiled-index tests)."""
    pairs = [p.split(" ") for line in BULLSEYE_11_0.splitlines() for p in line.split("|")]
    return [Package(n, v, "Debian", source_name=n, source_version=v, type="os") for n, v in pairs]


@pytest.mark.skipif(not (DATA / "osv").is_dir(), reason="shared/data snapshot not present")
def test_fewer_unknown_on_a_debian_11_image() -> None:
    """On the real snapshot, findings whose own record has no rating now get one from another source."""
    idx = load_snapshot(DATA)
    res = match_inventory(idx, bullseye_inventory(), BULLSEYE)
    own_unrated = [f for f in res.findings if idx.advisories[f.advisory_id].severity is None]
    unknown = [f for f in res.findings if f.severity is None]
    print(f"\n{len(res.findings)} findings, {len(own_unrated)} without own rating, {len(unknown)} unknown")
    assert len(res.findings) >= 10 and len(unknown) < len(own_unrated)
    assert all(f.severity_source is None for f in unknown)
    assert {f.severity_source for f in res.findings if f.severity} <= {
        "cvss",
        "advisory",
        "debian_urgency",
        "related_cvss",
    }
    # e.g. DSA-5111-1 (zlib, CVE-2018-25032) is rated by the nokogiri advisory naming the same CVE
    zlib = next(f for f in res.findings if f.advisory_id == "DSA-5111-1")
    assert (zlib.severity, zlib.severity_source, zlib.severity_record) == (
        "high",
        "related_cvss",
        "GHSA-v6gp-9mmm-c6p5",
    )
