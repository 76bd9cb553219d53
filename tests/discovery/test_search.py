"""Search by contents over a small catalog on SQLite and PostgreSQL: packages with version ranges
and purls, advisories with aliases, KEV, fix available, OS, end of life, full text and ranking."""

from __future__ import annotations

import pytest

from hallmark.discovery.packages import purl_name
from hallmark.discovery.search import SearchError, find, make_query, parse_range, search
from hallmark.metadata.store import MetadataStore


def names(meta: MetadataStore, **params: str) -> list[str]:
    found, total = search(meta, make_query(dict(params)))
    assert total == len(found)
    return [e["repository"] for e in found]


def test_ranking_approved_then_grade_then_newest(catalog: MetadataStore) -> None:
    # approved A (batch) before approved B (web); staging next; retired last
    assert names(catalog) == ["team/batch", "team/web", "team/api", "old/legacy"]


def test_package_name_and_version_range_in_the_ecosystems_order(catalog: MetadataStore) -> None:
    assert set(names(catalog, package="openssl")) == {"team/web", "team/api", "team/batch", "old/legacy"}
    # dpkg order: 1.1.1n < 3.0.2-1 < 3.0.7 < 3.0.11-1 (a string comparison would put 3.0.11 first)
    assert names(catalog, package="openssl", version="<3.0.7") == ["team/web", "old/legacy"]
    assert names(catalog, package="openssl", version=">=3.0.7,<3.1") == ["team/api"]
    assert names(catalog, package="openssl", version="=3.1.4-r5") == ["team/batch"]
    (entry,) = search(catalog, make_query({"package": "openssl", "version": ">3.0.10,<3.1"}))[0]
    assert entry["packages"] == [
        {
            "name": "openssl",
            "version": "3.0.11-1",
            "ecosystem": "Debian:12",
            "purl": "pkg:deb/debian/openssl@3.0.11-1?distro=debian-12",
        }
    ]


def test_purl_ignores_version_qualifiers_and_case(catalog: MetadataStore) -> None:
    assert names(catalog, purl="pkg:pypi/django") == ["team/web", "old/legacy"]
    assert names(catalog, purl="pkg:pypi/django@2.2") == ["old/legacy"]
    assert names(catalog, purl="pkg:pypi/django", version=">=4") == ["team/web"]
    assert names(catalog, purl="pkg:deb/debian/openssl?arch=amd64") == ["team/web", "team/api", "old/legacy"]


def test_advisory_with_aliases_and_vex(catalog: MetadataStore) -> None:
    # team/api's CVE-2024-0001 is suppressed by VEX (not affected): not listed
    assert names(catalog, advisory="CVE-2024-0001") == ["team/web", "old/legacy"]
    assert names(catalog, advisory="CVE-2024-0002") == ["team/api"]  # known as DSA-5555-1
    assert names(catalog, advisory="DSA-5555-1") == ["team/api"]
    (entry,) = search(catalog, make_query({"advisory": "CVE-2024-0001", "stage": "approved"}))[0]
    assert entry["findings"][0]["advisory_id"] == "CVE-2024-0001" and entry["findings"][0]["kev"]
    assert names(catalog, advisory="CVE-1999-0000") == []


def test_flags_stage_grade_owner_os_and_eol(catalog: MetadataStore) -> None:
    assert names(catalog, kev="true") == ["team/web"]
    assert names(catalog, kev="false") == ["team/batch", "team/api", "old/legacy"]
    assert names(catalog, fix_available="true") == ["team/web", "old/legacy"]
    assert names(catalog, stage="staging") == ["team/api"]
    assert names(catalog, grade="a") == ["team/batch", "team/api"]
    assert names(catalog, owner="payments") == ["team/web"]
    assert names(catalog, os="alpine") == ["team/batch"]
    assert names(catalog, os="debian:12") == ["team/web", "team/api", "old/legacy"]
    assert names(catalog, os="bookworm", stage="approved") == ["team/web"]
    assert names(catalog, os="alpine 3.19") == ["team/batch"]
    assert names(catalog, eol="eol") == ["team/api"]
    assert names(catalog, eol="false") == ["team/batch", "team/web", "old/legacy"]
    assert names(catalog, eol="supported") == ["team/web"]
    assert names(catalog, eol="unknown") == ["team/batch", "old/legacy"]
    assert names(catalog, package="openssl", kev="true", stage="approved") == ["team/web"]


def test_full_text_over_names_labels_and_packages(catalog: MetadataStore) -> None:
    assert names(catalog, q="flask") == ["team/api"]  # a package name
    assert names(catalog, q="storefront") == ["team/web"]  # a label value
    assert names(catalog, q="nightly batch") == ["team/batch"]  # label words, any order
    assert names(catalog, q="djan") == ["team/web", "old/legacy"]  # a prefix
    assert names(catalog, q="legacy") == ["old/legacy"]  # the repository name
    assert names(catalog, q="zzzz-nothing") == []
    if catalog.dialect == "postgresql":  # inside a word too, through the trigram index
        assert names(catalog, q="lask") == ["team/api"]
        assert names(catalog, q="50%") == []  # LIKE wildcards are literal


def test_paging(catalog: MetadataStore) -> None:
    page, total = search(catalog, make_query({"limit": "2", "offset": "1"}))
    assert total == 4 and [e["repository"] for e in page] == ["team/web", "team/api"]
    entry = page[0]
    assert entry["os"] == "Debian GNU/Linux 12 (bookworm)" and entry["eol"] == "supported"
    assert entry["stage"] == "approved" and entry["grade"] == "B" and entry["pushed_at"] is not None


@pytest.mark.parametrize(
    "params",
    [
        {"version": "<1"},
        {"package": "a", "version": "<"},
        {"package": "a", "version": "< 1 2"},
        {"purl": "django"},
        {"kev": "maybe"},
        {"eol": "later"},
        {"stage": "gold"},
        {"grade": "Z"},
        {"limit": "0"},
        {"limit": "x"},
    ],
)
def test_bad_input_is_a_clear_error(params: dict[str, str]) -> None:
    with pytest.raises(SearchError):
        make_query(dict(params))


def test_parsers() -> None:
    assert parse_range(">=1.0, <2.0") == [(">=", "1.0"), ("<", "2.0")]
    assert parse_range("1.2") == [("=", "1.2")] and parse_range("==1.2") == [("=", "1.2")]
    assert purl_name("pkg:npm/%40angular/core@17.0.1") == "pkg:npm/@angular/core"
    assert purl_name("pkg:PyPI/Django@4.2#sub") == "pkg:pypi/django"
    assert purl_name("django") is None


@pytest.mark.parametrize(
    "params",
    [{}, {"q": "legacy"}, {"q": "djan"}, {"q": "TEAM"}, {"stage": "approved"}, {"grade": "a"}, {"owner": "payments"}],
)
def test_a_window_cut_in_sql_is_the_same_slice_of_the_ranking(catalog: MetadataStore, params: dict[str, str]) -> None:
    """The portal's page for viewers who may read everything: only the window is read, same order and total."""
    full = find(catalog, make_query(dict(params))).keys
    for offset, limit in ((0, 2), (1, 2), (3, 5)):
        cut = find(catalog, make_query(dict(params)), window=(offset, limit))
        assert cut.total == len(full) and cut.keys == full[offset : offset + limit], (params, offset)


@pytest.mark.parametrize("params", [{"package": "openssl"}, {"os": "alpine"}, {"kev": "false"}, {"eol": "eol"}])
def test_filters_run_in_python_read_the_whole_ranking(catalog: MetadataStore, params: dict[str, str]) -> None:
    cut = find(catalog, make_query(dict(params)), window=(0, 1))
    assert cut.total is None and cut.keys == find(catalog, make_query(dict(params))).keys
