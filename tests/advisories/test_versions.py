"""Version ordering tables per scheme (examples from each ecosystem's own spec/tests)."""

from __future__ import annotations

import random

import pytest

from hallmark.advisories.versions import (
    UnparseableVersion,
    apk,
    dpkg,
    maven,
    pep440,
    rpm,
    rubygems,
    scheme_for_ecosystem,
    semver,
)
from hallmark.advisories.versions.semver import go_toolchain_to_semver


def _assert_ascending(mod, versions: list[str]) -> None:
    for i, a in enumerate(versions):
        for j, b in enumerate(versions):
            expected = (i > j) - (i < j)
            assert mod.compare(a, b) == expected, (a, b)
            ka, kb = mod.key(a), mod.key(b)
            assert ((ka > kb) - (ka < kb)) == expected, (a, b)


# Debian Policy 5.6.12: "~~" < "~~a" < "~" < "" < "a"; epochs dominate; digits compare numerically.
def test_dpkg_policy_order() -> None:
    _assert_ascending(
        dpkg,
        ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0a", "1.0+b1", "1.0.1", "1.9", "1.10", "1:0.1", "2:0.0"],
    )
    _assert_ascending(dpkg, ["2:1.20.11-1+deb11u5", "2:1.20.11-1+deb11u6", "2:1.20.11-1+deb11u10"])
    _assert_ascending(dpkg, ["1.0-1~bpo11+1", "1.0-1", "1.0-1+deb11u1", "1.0-2"])


@pytest.mark.parametrize(("a", "b"), [("1.0", "0:1.0"), ("1.0", "1.0-0"), ("1.0", "1.00"), ("1.0.", "1.0.0")])
def test_dpkg_equal(a: str, b: str) -> None:
    assert dpkg.compare(a, b) == 0
    assert dpkg.key(a) == dpkg.key(b)


@pytest.mark.parametrize("bad", ["", "a1.0", "x:1.0", "1.0 beta", "1.0-r@1"])
def test_dpkg_unparseable(bad: str) -> None:
    with pytest.raises(UnparseableVersion):
        dpkg.key(bad)


def test_dpkg_key_agrees_with_policy_algorithm() -> None:
    """The flat tuple key and the literal verrevcmp port are independent; they must agree."""
    rnd = random.Random(20261125)
    alphabet = "0123456789a.~+z"

    def gen() -> str:
        s = rnd.choice("0123456789") + "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 7)))
        if rnd.random() < 0.3:
            s = f"{rnd.randint(0, 2)}:{s}"
        if rnd.random() < 0.5:
            s += "-" + "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 4)))
        return s

    checked = 0
    for _ in range(20000):
        a, b = gen(), gen()
        ka, kb = dpkg.key(a), dpkg.key(b)
        assert dpkg.compare(a, b) == (ka > kb) - (ka < kb), (a, b)
        checked += 1
    assert checked == 20000


def test_apk_order() -> None:
    _assert_ascending(
        apk,
        ["1.0_alpha1", "1.0_beta1", "1.0_pre1", "1.0_rc1", "1.0", "1.0-r1", "1.0_p1", "1.0a", "1.0.1"],
    )
    _assert_ascending(apk, ["2.9.3-r0", "2.9.10-r0", "2.9.10-r1", "2.10-r0"])
    _assert_ascending(apk, ["1.01", "1.1"])  # leading zero: string comparison (Gentoo rule)
    assert apk.compare("1.2.3_git20200101-r0", "1.2.3-r0") == 1


@pytest.mark.parametrize("bad", ["abc", "1.0-foo", "1.0_bogus1", "4.8.0.-r1", "1.0-r"])
def test_apk_unparseable(bad: str) -> None:
    with pytest.raises(UnparseableVersion):
        apk.key(bad)


# rpmvercmp cases from rpm's own test suite (tests/rpmvercmp.at).
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0.1", "2.0.1a", -1),
        ("5.5p1", "5.5p2", -1),
        ("5.5p10", "5.5p1", 1),
        ("10xyz", "10.1xyz", -1),
        ("xyz10", "xyz10.1", -1),
        ("1.0aa", "1.0a", 1),
        ("2.0", "2_0", 0),
        ("2.0", "2.0.", 0),
        ("a", "1", -1),
        ("1.0~rc1", "1.0", -1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0~rc1~git123", "1.0~rc1", -1),
        ("1.0^", "1.0", 1),
        ("1.0^git1", "1.0.1", -1),
        ("1.0^git1", "1.0^git2", -1),
        ("1.0^git1~pre", "1.0^git1", -1),
        ("1.0^20160101", "1.0~rc1", 1),
        ("1:1.0-1", "2.0-1", 1),
        ("1.0-1.el8", "1.0-2.el8", -1),
    ],
)
def test_rpm_vercmp(a: str, b: str, expected: int) -> None:
    assert rpm.compare(a, b) == expected
    assert rpm.compare(b, a) == -expected


def test_pep440() -> None:
    _assert_ascending(pep440, ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.1", "1!0.1"])
    assert pep440.compare("1.0", "1.0.0") == 0
    with pytest.raises(UnparseableVersion):
        pep440.key("2.9.0-NA")


def test_semver_spec_example() -> None:
    # semver.org section 11 example, verbatim.
    _assert_ascending(
        semver,
        [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ],
    )
    assert semver.compare("1.0.0+build.1", "1.0.0+build.2") == 0
    assert semver.compare("v1.2.3", "1.2.3") == 0  # Go tags


@pytest.mark.parametrize("bad", ["1.2", "01.2.3", "1.2.3-01", "latest", "1.2.3.4"])
def test_semver_unparseable(bad: str) -> None:
    with pytest.raises(UnparseableVersion):
        semver.key(bad)


@pytest.mark.parametrize(
    ("toolchain", "expected"),
    [("go1.21.3", "1.21.3"), ("go1.21", "1.21.0"), ("go1.21rc2", "1.21.0-rc.2"), ("1.19beta1", "1.19.0-beta.1")],
)
def test_go_toolchain(toolchain: str, expected: str) -> None:
    assert go_toolchain_to_semver(toolchain) == expected


def test_maven_comparable_version_lists() -> None:
    # The ordered lists from Maven's ComparableVersionTest.
    _assert_ascending(
        maven,
        ["1-alpha2snapshot", "1-alpha2", "1-alpha-123", "1-beta-2", "1-beta123", "1-m2", "1-m11", "1-rc",
         "1-cr2", "1-rc123", "1-SNAPSHOT", "1", "1-sp", "1-sp2", "1-sp123", "1-abc", "1-def", "1-pom-1",
         "1-1-snapshot", "1-1", "1-2", "1-123"],
    )  # fmt: skip
    _assert_ascending(
        maven,
        ["2.0", "2.0.a", "2.0.0.a", "2.0.2", "2.0.123", "2.1.0", "2.1-a", "2.1b", "2.1-c", "2.1-1",
         "2.1.0.1", "2.2", "2.123", "11.a2", "11.a11", "11.b2", "11.b11", "11.m2", "11.m11", "11", "11.a",
         "11b", "11c", "11m"],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("a", "b"),
    [("1", "1.0.0"), ("1", "1-0"), ("1a", "1-a"), ("1a", "1.0.0-a"), ("1x", "1.0.0-x"), ("1ga", "1"),
     ("1final", "1"), ("1cr", "1rc"), ("1a1", "1-alpha-1"), ("1m3", "1-milestone-3"), ("1X", "1x")],
)  # fmt: skip
def test_maven_equal(a: str, b: str) -> None:
    assert maven.compare(a, b) == 0


def test_rubygems() -> None:
    _assert_ascending(rubygems, ["0.9", "1.0.a", "1.0.a9", "1.0.a10", "1.0.b1", "1.0", "1.0.1", "1.8.2"])
    assert rubygems.compare("1.0", "1") == 0
    assert rubygems.compare("0.beta.1", "0.0.beta.1") == 0
    assert rubygems.compare("0.0.beta", "0.0.beta.1") == -1
    assert rubygems.compare("5.a", "5.0.0.rc2") == -1
    assert rubygems.compare("5.x", "5.0.0.rc2") == 1
    assert rubygems.compare("1.0.0-1", "1.0.0") == -1  # "-" is a pre-release marker
    with pytest.raises(UnparseableVersion):
        rubygems.key("1.0 beta")


@pytest.mark.parametrize(
    ("ecosystem", "scheme"),
    [("PyPI", "pep440"), ("npm", "semver"), ("Go", "semver"), ("crates.io", "semver"), ("Maven", "maven"),
     ("RubyGems", "rubygems"), ("Debian", "dpkg"), ("Debian:11", "dpkg"), ("Ubuntu:22.04", "dpkg"),
     ("Alpine:v3.19", "apk"), ("Rocky Linux:9", "rpm")],
)  # fmt: skip
def test_registry(ecosystem: str, scheme: str) -> None:
    found = scheme_for_ecosystem(ecosystem)
    assert found is not None and found.name == scheme


@pytest.mark.parametrize("ecosystem", ["Packagist", "NuGet", "Hackage", "nonsense"])
def test_registry_without_scheme(ecosystem: str) -> None:
    assert scheme_for_ecosystem(ecosystem) is None
