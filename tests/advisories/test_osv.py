"""OSV range evaluation edge cases, record checks and the loader's bad-input handling."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from hallmark.advisories.osv import (
    Verdict,
    compile_range,
    cvss_base_score,
    load_osv_zip,
    normalize_name,
    parse_record,
)
from hallmark.advisories.versions import scheme

SEMVER = scheme("semver")


def _in(events: list[dict[str, str]], version: str) -> bool:
    return compile_range(SEMVER, events).contains(SEMVER.key(version))


@pytest.mark.parametrize(
    ("events", "inside", "outside"),
    [
        ([{"introduced": "0"}], ["0.0.0", "99.0.0"], []),
        ([{"introduced": "0"}, {"fixed": "1.0.2"}], ["0.0.1", "1.0.1", "1.0.2-rc.1"], ["1.0.2", "2.0.0"]),
        ([{"introduced": "1.0.0"}, {"last_affected": "1.2.0"}], ["1.0.0", "1.2.0"], ["0.9.0", "1.2.1"]),
        (
            [{"introduced": "1.0.0"}, {"fixed": "1.0.2"}, {"introduced": "3.0.0"}, {"fixed": "3.2.5"}],
            ["1.0.1", "3.0.0", "3.2.4"],
            ["0.1.0", "1.0.2", "2.9.9", "3.2.5"],
        ),
        # unsorted events are sorted by version first
        ([{"fixed": "3.2.5"}, {"introduced": "3.0.0"}, {"fixed": "1.0.2"}, {"introduced": "1.0.0"}],
         ["3.1.0"], ["2.0.0"]),
        # limit: nothing at or above the limit
        ([{"introduced": "1.0.0"}, {"limit": "2.0.0"}], ["1.5.0"], ["2.0.0", "3.0.0", "0.5.0"]),
        ([{"introduced": "1.0.0"}, {"limit": "*"}], ["5.0.0"], ["0.5.0"]),
        # ties keep record order (as OSV.dev does): fixed 2.0.0 then re-introduced at 2.0.0
        ([{"introduced": "0"}, {"fixed": "2.0.0"}, {"introduced": "2.0.0"}, {"fixed": "2.11.2"}],
         ["2.5.0"], ["2.11.2"]),
    ],
)  # fmt: skip
def test_range_edges(events: list[dict[str, str]], inside: list[str], outside: list[str]) -> None:
    for v in inside:
        assert _in(events, v), v
    for v in outside:
        assert not _in(events, v), v


def _record(**kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": "TEST-1", "modified": "2024-01-01T00:00:00Z"}
    rec.update(kw)
    return rec


def test_versions_list_and_git_ranges() -> None:
    rec = _record(
        affected=[
            {
                "package": {"ecosystem": "PyPI", "name": "Py_YAML"},
                "ranges": [
                    {"type": "GIT", "repo": "x", "events": [{"introduced": "abc"}]},
                    {"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "1.2"}]},
                ],
                "versions": ["0.9-legacy"],
            }
        ]
    )
    _, entries, problems = parse_record(rec)
    assert problems == [] and len(entries) == 1
    e = entries[0]
    assert e.name == "py-yaml" and len(e.ranges) == 1  # GIT range skipped, PEP 503 name
    assert e.evaluate("1.1") is Verdict.AFFECTED
    assert e.evaluate("1.2") is Verdict.NOT_AFFECTED
    assert e.evaluate("0.9-legacy") is Verdict.AFFECTED  # explicit versions list, even unparseable
    assert e.evaluate("not a version") is Verdict.UNKNOWN  # never "safe"


def test_broken_range_is_unknown_not_safe() -> None:
    rec = _record(
        affected=[{"package": {"ecosystem": "PyPI", "name": "x"}, "ranges": [
            {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.9.0-NA"}]}]}]
    )  # fmt: skip
    _, entries, problems = parse_record(rec)
    assert problems and entries[0].evaluate("1.0") is Verdict.UNKNOWN


def test_normalize_names() -> None:
    assert normalize_name("PyPI", "Zope.Interface") == "zope-interface"
    assert normalize_name("Debian:11", "OpenSSL") == "openssl"
    assert normalize_name("Go", "github.com/Foo/bar") == "github.com/Foo/bar"


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:C/C:H/I:N/A:N", 6.8),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3),
        ("AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5),
        ("CVSS:3.1/AV:X/garbage", None),
    ],
)
def test_cvss(vector: str, score: float | None) -> None:
    assert cvss_base_score(vector) == score


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


GOOD = _record(
    id="GOOD-1",
    aliases=["CVE-2020-1"],
    severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    affected=[{"package": {"ecosystem": "npm", "name": "lodash"},
               "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}]}],
)  # fmt: skip


def _bad_zip() -> bytes:
    members = {
        "GOOD-1.json": json.dumps(GOOD).encode(),
        "WD-1.json": json.dumps(_record(id="WD-1", withdrawn="2024-01-02T00:00:00Z")).encode(),
        "BADJSON.json": b"{not json",
        "NOID.json": json.dumps({"modified": "x"}).encode(),
        "UNK.json": json.dumps(_record(id="UNK", affected=[{"package": {"ecosystem": "Foo", "name": "x"},
                               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}])).encode(),
        "CORRUPT.json": b"A" * 2000,
    }  # fmt: skip
    raw = bytearray(_zip(members))
    # Corrupt the compressed bytes of CORRUPT.json so that reading it fails its CRC/inflate.
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo("CORRUPT.json")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start, start + info.compress_size):
        raw[i] ^= 0x5A
    return bytes(raw)


def _check_bad_zip_result(res: Any) -> None:
    st = res.stats
    assert [a.id for a in res.advisories] == ["GOOD-1", "UNK"]
    assert st.members == 6 and st.withdrawn == 1 and st.loaded == 2
    reasons = dict(st.skipped)
    assert reasons["invalid JSON"] == 1
    assert reasons["schema: missing id"] == 1
    assert reasons["unknown ecosystem: Foo"] == 1
    assert sum(v for k, v in reasons.items() if k.startswith("corrupt zip member")) == 1
    assert [e.name for e in res.affected] == ["lodash"]
    assert res.advisories[0].cvss_score == 9.8 and res.advisories[0].severity == "critical"


def test_loader_counts_bad_members(tmp_path: Path) -> None:
    p = tmp_path / "npm" / "all.zip"
    p.parent.mkdir()
    p.write_bytes(_bad_zip())
    _check_bad_zip_result(load_osv_zip(p))


def test_loader_over_http_uses_same_path() -> None:
    payload = _bad_zip()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=payload)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        res = load_osv_zip("https://mirror.invalid/npm/all.zip", client=client)
    assert seen == ["https://mirror.invalid/npm/all.zip"]
    _check_bad_zip_result(res)


def test_loader_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "all.zip"
    p.write_bytes(b"nope")
    res = load_osv_zip(p)
    assert res.stats.skipped["not a zip archive"] == 1 and res.affected == []
