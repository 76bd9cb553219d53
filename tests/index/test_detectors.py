"""Detectors on their own inputs, and the ones the synthetic image does not cover (rpm, apk, Go, Rust)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from hallmark.index import index_image
from hallmark.index.detectors import all_detectors
from hallmark.index.detectors.golang import GoBinaryDetector, parse_modinfo, read_buildinfo
from hallmark.index.detectors.java import JavaArchiveDetector
from hallmark.index.detectors.npm import NpmDetector
from hallmark.index.detectors.os_release import OsReleaseDetector
from hallmark.index.detectors.python import PythonDetector
from hallmark.index.detectors.rpm import RpmDetector, parse_header
from hallmark.index.detectors.rust import CargoAuditableDetector
from hallmark.index.elf import elf_section
from tests.index.imagebuilder import Layer, build_image, make_jar, pom


def test_every_ecosystem_folder_is_discovered() -> None:
    names = {d.name for d in all_detectors()}
    assert names == {
        "os-release",
        "dpkg",
        "apk",
        "rpm",
        "python",
        "npm",
        "go-binary",
        "java-archive",
        "gemspec",
        "cargo-auditable",
        "composer",
        "dotnet-deps",
    }


# --- RPM -------------------------------------------------------------------------------------


def rpm_header(tags: dict[int, str | int]) -> bytes:
    """An rpmdb header blob: il, dl, index entries, data store (strings NUL-terminated, int32 aligned)."""
    index, store = b"", b""
    for tag, value in tags.items():
        if isinstance(value, int):
            store += b"\0" * (-len(store) % 4)
            index += struct.pack(">iiii", tag, 4, len(store), 1)
            store += struct.pack(">i", value)
        else:
            index += struct.pack(">iiii", tag, 6, len(store), 1)
            store += value.encode() + b"\0"
    return struct.pack(">ii", len(tags), len(store)) + index + store


def rpmdb(headers: list[bytes]) -> bytes:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
    db.executemany("INSERT INTO Packages (blob) VALUES (?)", [(h,) for h in headers])
    db.commit()
    data = db.serialize()
    db.close()
    return data


def test_rpm_sqlite_database_in_an_image() -> None:
    headers = [
        rpm_header(
            {
                1000: "openssl-libs",
                1003: 1,
                1001: "3.0.7",
                1002: "27.el9",
                1014: "Apache-2.0",
                1022: "x86_64",
                1044: "openssl-3.0.7-27.el9.src.rpm",
            }
        ),
        rpm_header({1000: "bash", 1001: "5.1.8", 1002: "9.el9", 1022: "x86_64", 1044: "bash-5.1.8-9.el9.src.rpm"}),
        rpm_header({1000: "gpg-pubkey", 1001: "fd431d51", 1002: "4ae0493b"}),
        b"\x00\x00",  # a damaged row must not stop the others
    ]
    layer = (
        Layer()
        .file("etc/os-release", 'ID="rocky"\nVERSION_ID="9.3"\n')
        .file("usr/lib/sysimage/rpm/rpmdb.sqlite", rpmdb(headers))
        .symlink("var/lib/rpm", "../../usr/lib/sysimage/rpm")
    )
    img = build_image([(layer.tar_bytes(), "gzip")])
    r = index_image(img.manifest, img.config, img.open_layer)
    pk = {p.name: p for p in r.packages}
    assert set(pk) == {"openssl-libs", "bash"}
    ssl = pk["openssl-libs"]
    assert (ssl.version, ssl.source_name, ssl.ecosystem, ssl.licenses) == (
        "1:3.0.7-27.el9",
        "openssl",
        "Rocky Linux",
        ["Apache-2.0"],
    )
    assert ssl.purl == "pkg:rpm/rocky/openssl-libs@3.0.7-27.el9?arch=x86_64&distro=rocky-9.3&epoch=1"


def test_rpm_header_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        parse_header(struct.pack(">ii", 5, 10_000))


def test_rpm_berkeley_db_is_a_warning() -> None:
    d = RpmDetector().detect("var/lib/rpm/Packages", b"\0" * 100)
    assert d is not None and "Berkeley DB" in d.warnings[0]


# --- apk, os-release -------------------------------------------------------------------------


def test_alpine_image() -> None:
    installed = (
        "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nL:MIT\no:musl\n\n"
        "C:Q1def=\nP:libcrypto3\nV:3.1.4-r5\nA:x86_64\nL:Apache-2.0\no:openssl\n"
    )
    layer = Layer().file("etc/alpine-release", "3.19.1\n").file("lib/apk/db/installed", installed)
    img = build_image([(layer.tar_bytes(), "gzip")])
    r = index_image(img.manifest, img.config, img.open_layer)
    assert r.distro is not None and (r.distro.id, r.distro.version_id) == ("alpine", "3.19")
    pk = {p.name: p for p in r.packages}
    assert pk["libcrypto3"].source_name == "openssl"
    assert pk["libcrypto3"].purl == "pkg:apk/alpine/libcrypto3@3.1.4-r5?arch=x86_64&distro=alpine-3.19&upstream=openssl"
    assert pk["musl"].ecosystem == "Alpine" and pk["musl"].licenses == ["MIT"]


def test_os_release_fallbacks() -> None:
    d = OsReleaseDetector()
    r = d.detect("etc/debian_version", b"12.5\n")
    assert r is not None and r.distro is not None and (r.distro.id, r.distro.version_id) == ("debian", "12")
    r = d.detect("etc/redhat-release", b"Red Hat Enterprise Linux release 8.9 (Ootpa)\n")
    assert r is not None and r.distro is not None and (r.distro.id, r.distro.version_id) == ("rhel", "8")
    r = d.detect("etc/lsb-release", b"DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n")
    assert r is not None and r.distro is not None and (r.distro.id, r.distro.codename) == ("ubuntu", "jammy")


def test_ubuntu_dpkg_distroless_status_d() -> None:
    layer = (
        Layer()
        .file("etc/os-release", "ID=ubuntu\nVERSION_ID=22.04\n")
        .file("var/lib/dpkg/status.d/libc6", "Package: libc6\nVersion: 2.35-0ubuntu3.6\nSource: glibc\n")
        .file("var/lib/dpkg/status.d/libc6.md5sums", "abc  usr/lib/x\n")
    )
    img = build_image([(layer.tar_bytes(), None)])
    r = index_image(img.manifest, img.config, img.open_layer)
    assert [(p.name, p.ecosystem, p.source_name) for p in r.packages] == [("libc6", "Ubuntu", "glibc")]
    assert r.packages[0].purl is not None and r.packages[0].purl.startswith("pkg:deb/ubuntu/libc6@")


# --- language detectors ----------------------------------------------------------------------


def test_python_egg_info_and_classifier_licence() -> None:
    meta = (
        b"Metadata-Version: 1.1\nName: Zope.Interface\nVersion: 5.0\n"
        b"Classifier: License :: OSI Approved :: Zope Public License\n"
    )
    r = PythonDetector().detect("usr/lib/python3/dist-packages/zope.interface-5.0.egg-info", meta)
    assert r is not None
    p = r.packages[0]
    assert (p.name, p.purl, p.licenses) == ("zope-interface", "pkg:pypi/zope-interface@5.0", ["Zope Public License"])


def test_npm_lock_v1_and_yarn() -> None:
    lock = {
        "lockfileVersion": 1,
        "dependencies": {"a": {"version": "1.0.0", "dependencies": {"b": {"version": "2.0.0"}}}},
    }
    r = NpmDetector().detect("srv/package-lock.json", json.dumps(lock).encode())
    assert r is not None and sorted((p.name, p.version) for p in r.packages) == [("a", "1.0.0"), ("b", "2.0.0")]
    yarn = (
        b'# yarn lockfile v1\n\n"@scope/x@^1.0.0", "@scope/x@^1.1.0":\n  version "1.2.0"\n  resolved "..."\n\n'
        b'lodash@^4:\n  version "4.17.21"\n'
    )
    r = NpmDetector().detect("srv/yarn.lock", yarn)
    assert r is not None and [(p.name, p.version) for p in r.packages] == [("@scope/x", "1.2.0"), ("lodash", "4.17.21")]
    # a package.json that is not a package's own (e.g. a test fixture inside a package) is ignored
    assert NpmDetector().detect("app/node_modules/x/test/package.json", b'{"name":"y","version":"1"}') is None


def test_java_manifest_fallback_and_depth_limit() -> None:
    jar = make_jar({"META-INF/MANIFEST.MF": "Manifest-Version: 1.0\nImplementation-Title: Some Lib\n"})
    r = JavaArchiveDetector().detect("opt/lib/commons-io-2.11.0.jar", jar)
    assert r is not None and [(p.name, p.version) for p in r.packages] == [("commons-io", "2.11.0")]
    nested = make_jar(pom("g", "deep", "1"))
    for i in range(6):
        nested = make_jar({f"lib/level{i}.jar": nested})
    r = JavaArchiveDetector().detect("app.jar", nested)
    assert r is not None and r.packages == [] and any("nested deeper" in w for w in r.warnings)


# --- Go --------------------------------------------------------------------------------------


def go_binaries() -> list[str]:
    candidates = ["/usr/bin/umoci", "/usr/bin/skopeo", "/usr/local/bin/terraform", "/usr/local/bin/docker"]
    return [p for p in candidates if os.path.isfile(p) and (shutil.which(p) is not None)]


@pytest.mark.skipif(not go_binaries(), reason="no Go binary on this machine")
@pytest.mark.parametrize("binary", go_binaries())
def test_go_buildinfo_of_real_binaries(binary: str) -> None:
    with open(binary, "rb") as f:
        data = f.read()
    info = read_buildinfo(data)
    assert info is not None
    version, modinfo = info
    assert version.startswith("go1.")
    pkgs = parse_modinfo(version, modinfo)
    stdlib = [p for p in pkgs if p.name == "stdlib"]
    assert len(stdlib) == 1 and stdlib[0].version == version[2:].split()[0].split("-")[0]
    assert stdlib[0].purl == f"pkg:golang/stdlib@{stdlib[0].version}"
    for p in pkgs:
        if p.type == "library":
            assert p.version.startswith("v") and p.purl is not None and p.purl.startswith("pkg:golang/")


def test_go_binary_found_in_an_image() -> None:
    binaries = go_binaries()
    if not binaries:
        pytest.skip("no Go binary on this machine")
    smallest = min(binaries, key=os.path.getsize)
    with open(smallest, "rb") as f:
        data = f.read()
    layer = Layer().file("usr/local/bin/tool", data, mode=0o755).file("usr/local/bin/notexec", data, mode=0o644)
    img = build_image([(layer.tar_bytes(), "gzip")])
    r = index_image(img.manifest, img.config, img.open_layer)
    go = [p for p in r.packages if p.ecosystem == "Go"]
    assert go and all(p.paths == ["/usr/local/bin/tool"] for p in go)
    assert any(p.name == "stdlib" for p in go)


@pytest.mark.skipif(shutil.which("go") is None, reason="no go toolchain")
def test_go_module_binary_built_here(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module example.com/hello\n\ngo 1.20\n")
    (tmp_path / "main.go").write_text('package main\n\nfunc main() { println("hi") }\n')
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    subprocess.run(["go", "build", "-o", "hello", "."], cwd=tmp_path, check=True, env=env)
    r = GoBinaryDetector().detect("hello", (tmp_path / "hello").read_bytes())
    assert r is not None
    assert any(p.name == "example.com/hello" and p.type == "application" for p in r.packages)


def test_go_modinfo_replace_directive() -> None:
    mod = (
        "path\tex.com/m\nmod\tex.com/m\t(devel)\t\n"
        "dep\tgolang.org/x/net\tv0.1.0\th1:x\n=>\tex.com/fork/net\tv0.1.1\th1:y\n"
        "dep\tex.com/local\tv0.0.0\n=>\t./local\t\n"
    )
    pkgs = parse_modinfo("go1.22.1", mod)
    assert [(p.name, p.version) for p in pkgs] == [
        ("ex.com/m", "(devel)"),
        ("ex.com/fork/net", "v0.1.1"),
        ("ex.com/local", "v0.0.0"),
        ("stdlib", "1.22.1"),
    ]


# --- Rust ------------------------------------------------------------------------------------


def elf_with_section(name: str, content: bytes) -> bytes:
    """A minimal ELF64 LE file: header, one named section and the section-name string table."""
    shstrtab = b"\0" + name.encode() + b"\0.shstrtab\0"
    data_off = 64
    str_off = data_off + len(content)
    sh_off = (str_off + len(shstrtab) + 7) // 8 * 8
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    header += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, 3, 2)
    body = header + content + shstrtab
    body += b"\0" * (sh_off - len(body))

    def sh(name_off: int, typ: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name_off, typ, 0, 0, off, size, 0, 0, 1, 0)

    body += sh(0, 0, 0, 0) + sh(1, 1, data_off, len(content)) + sh(2 + len(name), 3, str_off, len(shstrtab))
    return body


def test_cargo_auditable_section() -> None:
    deps = {
        "packages": [
            {"name": "myapp", "version": "0.1.0", "source": "local", "root": True, "dependencies": [1]},
            {"name": "serde", "version": "1.0.190", "source": "crates.io"},
        ]
    }
    binary = elf_with_section(".dep-v0", zlib.compress(json.dumps(deps).encode()))
    assert elf_section(binary, ".dep-v0") is not None
    layer = Layer().file("usr/bin/myapp", binary, mode=0o755)
    img = build_image([(layer.tar_bytes(), "zstd")])
    r = index_image(img.manifest, img.config, img.open_layer)
    assert [(p.name, p.version, p.ecosystem, p.purl, p.type) for p in r.packages] == [
        ("myapp", "0.1.0", "crates.io", "pkg:cargo/myapp@0.1.0", "application"),
        ("serde", "1.0.190", "crates.io", "pkg:cargo/serde@1.0.190", "library"),
    ]
    r2 = CargoAuditableDetector().detect("x", elf_with_section(".dep-v0", b"not zlib"))
    assert r2 is not None and r2.packages == [] and "unreadable" in r2.warnings[0]
