"""End-to-end indexing of the synthetic image: whiteouts, opaque dirs, symlinks, hardlinks, layers."""

from __future__ import annotations

from hallmark.index import index_image
from hallmark.model import Package
from tests.index.imagebuilder import Image, Layer, build_image


def by_name(packages: list[Package]) -> dict[str, Package]:
    return {p.name: p for p in packages}


def test_inventory_reflects_final_filesystem(debian_image: Image) -> None:
    r = index_image(debian_image.manifest, debian_image.config, debian_image.open_layer)
    assert r.status == "done", r.error
    assert r.warnings == []
    names = {(p.ecosystem, p.name, p.version) for p in r.packages}
    assert names == {
        ("Debian", "libc6", "2.36-9+deb12u4"),
        ("Debian", "libssl3", "3.0.11-1~deb12u2+b1"),
        ("Debian", "tzdata", "2024a-0+deb12u1"),
        ("Debian", "curl", "7.88.1-10+deb12u5"),
        ("PyPI", "six", "1.16.0"),
        ("PyPI", "requests", "2.31.0"),
        ("PyPI", "foo-bar-baz", "1.0"),
        ("npm", "lodash", "4.17.20"),
        ("npm", "@babel/core", "7.0.0"),
        ("npm", "a", "1.0.0"),
        ("npm", "b", "2.0.0"),
        ("npm", "left-pad", "1.3.0"),
        ("Maven", "com.example:webapp", "0.9"),
        ("Maven", "com.example:inner", "1.2.3"),
        ("Maven", "org.apache.logging.log4j:log4j-core", "2.14.1"),
        ("Maven", "plainlib", "4.5"),
        ("RubyGems", "rake", "13.0.6"),
        ("Packagist", "monolog/monolog", "2.9.1"),
        ("NuGet", "Newtonsoft.Json", "13.0.1"),
    }
    # deleted by a whiteout (removeme), by an opaque directory (gone-pkg), and not installed (oldpkg)
    assert not {"removeme", "gone-pkg", "oldpkg"} & {p.name for p in r.packages}


def test_distro_via_symlinked_os_release(debian_image: Image) -> None:
    r = index_image(debian_image.manifest, debian_image.config, debian_image.open_layer)
    assert r.distro is not None
    assert (r.distro.id, r.distro.version_id, r.distro.codename) == ("debian", "12", "bookworm")


def test_source_packages_and_purls(debian_image: Image) -> None:
    pk = by_name(index_image(debian_image.manifest, debian_image.config, debian_image.open_layer).packages)
    assert (pk["libc6"].source_name, pk["libc6"].source_version) == ("glibc", "2.36-9+deb12u4")
    assert (pk["libssl3"].source_name, pk["libssl3"].source_version) == ("openssl", "3.0.11-1~deb12u2")
    assert pk["libssl3"].purl == (
        "pkg:deb/debian/libssl3@3.0.11-1~deb12u2%2Bb1?arch=amd64&distro=debian-12&upstream=openssl"
    )
    assert pk["@babel/core"].purl == "pkg:npm/%40babel/core@7.0.0"
    assert pk["com.example:inner"].purl == "pkg:maven/com.example/inner@1.2.3"
    assert pk["requests"].purl == "pkg:pypi/requests@2.31.0"
    assert pk["requests"].licenses == ["Apache-2.0"]
    assert pk["rake"].licenses == ["MIT"]


def test_introducing_layer(debian_image: Image) -> None:
    r = index_image(debian_image.manifest, debian_image.config, debian_image.open_layer)
    layer_of = {p.name: debian_image.layer_digests.index(p.layer or "") for p in r.packages}
    # the status file is rewritten in layer 1, but libc6 was already there in layer 0
    assert layer_of["libc6"] == 0
    assert layer_of["curl"] == 1
    assert layer_of["six"] == 0
    assert layer_of["lodash"] == 1
    assert layer_of["rake"] == 2


def test_paths_follow_hardlinks_nesting_and_merged_usr(debian_image: Image) -> None:
    pk = by_name(index_image(debian_image.manifest, debian_image.config, debian_image.open_layer).packages)
    # the original jar is whited out in layer 2; only its hardlink remains
    assert pk["org.apache.logging.log4j:log4j-core"].paths == ["/app/other/log4j-copy.jar"]
    assert pk["com.example:inner"].paths == ["/app/lib/webapp.war:WEB-INF/lib/inner-1.2.3.jar"]
    # written as lib/python3/... where lib -> usr/lib is a symlink from layer 0
    assert pk["foo-bar-baz"].paths == ["/usr/lib/python3/dist-packages/Foo_Bar.baz-1.0.dist-info"]


def test_hardlink_and_original_both_present_give_one_package_two_paths() -> None:
    from tests.index.imagebuilder import make_jar, pom

    jar = make_jar(pom("g", "a", "1"))
    layer = Layer().file("opt/a.jar", jar).hardlink("srv/b.jar", "opt/a.jar")
    img = build_image([(layer.tar_bytes(), "gzip")])
    r = index_image(img.manifest, img.config, img.open_layer)
    assert [(p.name, p.paths) for p in r.packages] == [("g:a", ["/opt/a.jar", "/srv/b.jar"])]


def test_package_rewritten_after_deletion_is_dated_to_the_new_layer() -> None:
    meta = "Name: x\nVersion: 1\n"
    path = "site/x-1.dist-info/METADATA"
    img = build_image(
        [
            (Layer().file(path, meta).tar_bytes(), None),
            (Layer().whiteout("site/x-1.dist-info").tar_bytes(), None),
            (Layer().file(path, meta).file("other", "makes this layer's digest differ").tar_bytes(), None),
        ]
    )
    r = index_image(img.manifest, img.config, img.open_layer)
    assert [p.layer for p in r.packages] == [img.layer_digests[2]]


def test_file_replaced_by_directory_and_symlinked_dir_replaced() -> None:
    img = build_image(
        [
            (Layer().file("opt/p/x-1.dist-info/METADATA", "Name: x\nVersion: 1\n").tar_bytes(), None),
            # replace the whole opt/p directory by a symlink: its content is gone
            (Layer().whiteout("opt/p").symlink("opt/p", "/elsewhere").tar_bytes(), None),
        ]
    )
    r = index_image(img.manifest, img.config, img.open_layer)
    assert r.packages == []


def test_symlink_cannot_escape_the_image_root() -> None:
    layer = (
        Layer()
        .file("usr/lib/os-release", "ID=alpine\nVERSION_ID=3.19.1\n")
        # ../../../ stops at the image root, exactly as inside a chroot
        .symlink("etc/os-release", "../../../../../../usr/lib/os-release")
    )
    img = build_image([(layer.tar_bytes(), None)])
    r = index_image(img.manifest, img.config, img.open_layer)
    assert r.distro is not None and r.distro.id == "alpine"


def test_parent_folder_replaced_by_symlink_mid_layer() -> None:
    """Entries after a folder becomes a symlink go through the new symlink (no stale resolution)."""
    meta = "Name: {0}\nVersion: 1\n"
    layer0 = Layer().file("opt/a/x-1.dist-info/METADATA", meta.format("x")).file("srv/keep", "1")
    layer1 = (
        Layer()
        .file("opt/a/y-1.dist-info/METADATA", meta.format("y"))  # resolves opt/a (a real folder) ...
        .symlink("opt/a", "/srv")  # ... which is then replaced by a symlink
        .file("opt/a/z-1.dist-info/METADATA", meta.format("z"))  # so this one lands in /srv
    )
    img = build_image([(layer0.tar_bytes(), None), (layer1.tar_bytes(), None)])
    r = index_image(img.manifest, img.config, img.open_layer)
    assert [(p.name, p.paths) for p in r.packages] == [("z", ["/srv/z-1.dist-info"])]
