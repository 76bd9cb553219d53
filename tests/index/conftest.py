"""Fixtures: a synthetic three-layer Debian-like image exercising every cross-layer rule."""

from __future__ import annotations

import json

import pytest

from tests.index.imagebuilder import Image, Layer, build_image, dist_info, make_jar, package_json, pom

OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION_CODENAME=bookworm
ID=debian
"""

DPKG_BASE = """Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4

Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl (3.0.11-1~deb12u2)
Version: 3.0.11-1~deb12u2+b1
Description: Secure Sockets Layer toolkit
 a continuation line
 .
 another one

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""

DPKG_PLUS_CURL = (
    DPKG_BASE
    + """
Package: curl
Status: install ok installed
Architecture: amd64
Version: 7.88.1-10+deb12u5
"""
)


def layer0() -> Layer:
    return (
        Layer()
        .dir("usr")
        .dir("usr/bin")
        .dir("usr/lib")
        .symlink("bin", "usr/bin")
        .symlink("lib", "usr/lib")
        .dir("etc")
        .file("usr/lib/os-release", OS_RELEASE)
        .symlink("etc/os-release", "../usr/lib/os-release")
        .file("var/lib/dpkg/status", DPKG_BASE)
        .file("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", dist_info("six", "1.16.0", "MIT"))
        .file("usr/lib/python3/dist-packages/removeme-1.0.dist-info/METADATA", dist_info("removeme", "1.0"))
        .file("opt/old/lib/python/Gone_Pkg-2.0.dist-info/METADATA", dist_info("Gone_Pkg", "2.0"))
    )


def layer1() -> Layer:
    inner = make_jar({**pom("com.example", "inner", "1.2.3"), "META-INF/MANIFEST.MF": "Manifest-Version: 1.0\n"})
    war = make_jar({**pom("com.example", "webapp", "0.9"), "WEB-INF/lib/inner-1.2.3.jar": inner})
    log4j = make_jar(
        {
            **pom("org.apache.logging.log4j", "log4j-core", "2.14.1"),
            "META-INF/MANIFEST.MF": (
                "Manifest-Version: 1.0\nBundle-License: https://www.apache.org/licenses/LICE\n NSE-2.0.txt\n"
            ),
        }
    )
    manifest_only = make_jar(
        {"META-INF/MANIFEST.MF": "Manifest-Version: 1.0\nImplementation-Title: plainlib\nImplementation-Version: 4.5\n"}
    )
    lock = json.dumps(
        {
            "lockfileVersion": 3,
            "packages": {
                "": {"name": "app", "version": "1.0.0"},
                "node_modules/left-pad": {"version": "1.3.0", "license": "WTFPL"},
            },
        }
    )
    return (
        Layer()
        .file("var/lib/dpkg/status", DPKG_PLUS_CURL)
        .file(
            "usr/local/lib/python3.11/site-packages/Requests-2.31.0.dist-info/METADATA",
            dist_info("Requests", "2.31.0", "Apache-2.0"),
        )
        # written through the merged-/usr symlink "lib" of layer 0
        .file("lib/python3/dist-packages/Foo_Bar.baz-1.0.dist-info/METADATA", dist_info("Foo_Bar.baz", "1.0"))
        .file("app/node_modules/lodash/package.json", package_json("lodash", "4.17.20"))
        .file("app/node_modules/@babel/core/package.json", package_json("@babel/core", "7.0.0"))
        .file("app/node_modules/a/node_modules/b/package.json", package_json("b", "2.0.0", "ISC"))
        .file("app/node_modules/a/package.json", package_json("a", "1.0.0"))
        .file("app/package-lock.json", lock)
        .file("app/lib/webapp.war", war)
        .file("app/lib/log4j-core-2.14.1.jar", log4j)
        .hardlink("app/other/log4j-copy.jar", "app/lib/log4j-core-2.14.1.jar")
        .file("app/lib/plainlib.jar", manifest_only)
    )


def layer2() -> Layer:
    return (
        Layer()
        .whiteout("usr/lib/python3/dist-packages/removeme-1.0.dist-info")
        .dir("opt/old")
        .opaque("opt/old")
        .file("opt/old/new.txt", "new")
        .whiteout("app/lib/log4j-core-2.14.1.jar")
        .file(
            "usr/local/bundle/specifications/rake-13.0.6.gemspec",
            '# -*- encoding: utf-8 -*-\nGem::Specification.new do |s|\n  s.name = "rake".freeze\n'
            '  s.version = "13.0.6"\n  s.licenses = ["MIT".freeze]\nend\n',
        )
        .file(
            "var/www/vendor/composer/installed.json",
            json.dumps({"packages": [{"name": "monolog/monolog", "version": "2.9.1", "license": ["MIT"]}]}),
        )
        .file(
            "app/dotnet/app.deps.json",
            json.dumps(
                {
                    "libraries": {
                        "app/1.0.0": {"type": "project"},
                        "Newtonsoft.Json/13.0.1": {"type": "package"},
                    }
                }
            ),
        )
    )


@pytest.fixture(scope="session")
def debian_image() -> Image:
    return build_image([(layer0().tar_bytes(), "gzip"), (layer1().tar_bytes(), "zstd"), (layer2().tar_bytes(), None)])
