"""Hostile and broken images fail with a clear reason (or a warning) instead of hurting the indexer."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from hallmark.index import IndexResult, Limits, index_image
from tests.index.imagebuilder import Layer, build_image


def run(layers: list[tuple[bytes, str | None]], limits: Limits | None = None, **kw: object) -> IndexResult:
    img = build_image(layers, **kw)  # type: ignore[arg-type]
    return index_image(img.manifest, img.config, img.open_layer, limits=limits)


def raw_tar(name: str, data: bytes = b"x", linkname: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        if linkname is not None:
            info.type, info.linkname = tarfile.LNKTYPE, linkname
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("tar", "reason"),
    [
        (raw_tar("../../etc/passwd"), "escapes the image root"),
        (raw_tar("usr/../../etc/cron.d/x"), "escapes the image root"),
        (raw_tar("/../etc/passwd"), "escapes the image root"),
        (raw_tar("etc/x", linkname="../../../etc/shadow"), "hardlink target"),
        (raw_tar(".wh..."), "escapes the image root"),
        (raw_tar("a/.wh..."), "would delete the image root"),
        (raw_tar(".wh.."), "would delete the image root"),
    ],
)
def test_path_traversal_fails_the_image(tar: bytes, reason: str) -> None:
    r = run([(tar, "gzip")])
    assert r.status == "failed"
    assert r.failure is not None and r.failure.startswith("index failed: path traversal guard")
    assert reason in r.failure


def test_symlink_loop_is_a_warning_not_a_hang() -> None:
    layer = (
        Layer()
        .symlink("a", "b")
        .symlink("b", "a")
        .symlink("etc/os-release", "/a")
        .symlink("self", "self/x")
        .file("usr/lib/os-release", "ID=debian\nVERSION_ID=12\n")
    )
    later = Layer().file("a/inside/x-1.dist-info/METADATA", "Name: x\nVersion: 1\n")
    r = run([(layer.tar_bytes(), None), (later.tar_bytes(), None)])
    assert r.status == "done"
    assert any("symlink loop" in w for w in r.warnings)
    assert r.distro is not None and r.distro.id == "debian"  # falls back to usr/lib/os-release
    assert r.packages == []


def test_gzip_bomb_is_stopped() -> None:
    bomb = Layer().file("zeros", b"\0" * (24 << 20)).tar_bytes()
    r = run([(bomb, "gzip")], limits=Limits(bomb_floor=4 << 20, max_ratio=100))
    assert r.status == "failed"
    assert r.error is not None and "decompression bomb guard" in r.error


def test_layer_size_limit() -> None:
    layer = Layer().file("big", b"abc" * 100_000).tar_bytes()
    r = run([(layer, "zstd")], limits=Limits(max_layer_bytes=100_000))
    assert r.status == "failed"
    assert r.error is not None and "uncompressed bytes" in r.error


def test_oversized_file_is_skipped_with_a_warning() -> None:
    layer = Layer().file("var/lib/dpkg/status", "Package: a\nVersion: 1\n" + "X-Pad: " + "p" * 5000 + "\n")
    r = run([(layer.tar_bytes(), "gzip")], limits=Limits(max_file_bytes=1000))
    assert r.status == "done"
    assert r.packages == []
    assert any("per-file limit" in w and "/var/lib/dpkg/status" in w for w in r.warnings)


def test_truncated_gzip_fails() -> None:
    layer = Layer().file("f", bytes(range(256)) * 4000).tar_bytes()
    blob = gzip.compress(layer)
    cut = blob[: len(blob) // 2]
    r = run([(cut, None)])  # stored as is (the manifest digest matches the truncated bytes)
    assert r.status == "failed"
    assert r.error is not None and "truncated or corrupt" in r.error


def test_gzip_missing_only_its_trailer_fails() -> None:
    blob = gzip.compress(Layer().file("f", "hello").tar_bytes())
    r = run([(blob[:-6], None)])
    assert r.status == "failed"
    assert r.error is not None and "truncated or corrupt" in r.error


def test_truncated_plain_tar_fails() -> None:
    layer = Layer().file("var/lib/dpkg/status", "Package: a\nVersion: 1\n" * 2000).tar_bytes()
    r = run([(layer[:5000], None)])
    assert r.status == "failed"
    assert r.error is not None and "truncated" in r.error


def test_corrupt_gzip_fails() -> None:
    r = run([(b"\x1f\x8b\x08\x00" + b"\xff" * 500, None)])
    assert r.status == "failed"
    assert r.error is not None and "corrupt" in r.error


def test_corrupt_zstd_fails() -> None:
    r = run([(b"\x28\xb5\x2f\xfd" + b"\x00\xff" * 200, None)])
    assert r.status == "failed"
    assert r.error is not None and "corrupt" in r.error


def test_blob_not_matching_its_digest_fails() -> None:
    good = Layer().file("a", "1").tar_bytes()
    evil = Layer().file("a", "2").tar_bytes()
    r = run([(good, None)], blob_override={0: evil})
    assert r.status == "failed"
    assert r.error is not None and "does not match its digest" in r.error


def test_zip_bomb_member_inside_jar_is_skipped() -> None:
    from tests.index.imagebuilder import make_jar, pom

    jar = make_jar({**pom("g", "a", "1"), "huge.bin": b"\0" * (8 << 20)})
    r = run([(Layer().file("app/a.jar", jar).tar_bytes(), None)])
    assert r.status == "done"
    assert [p.name for p in r.packages] == ["g:a"]
    assert any("size/ratio guard" in w for w in r.warnings)


def test_broken_archive_where_a_jar_should_be_is_a_warning() -> None:
    r = run([(Layer().file("app/a.jar", b"not a zip").tar_bytes(), None)])
    assert r.status == "done" and r.packages == []
    assert any("not a readable archive" in w for w in r.warnings)


def test_garbage_manifest_and_config_fail_cleanly() -> None:
    r = index_image(b"{not json", b"{}", lambda d: io.BytesIO())
    assert r.status == "failed" and r.error is not None and "not JSON" in r.error
    img = build_image([(Layer().file("a", "1").tar_bytes(), None)])
    r = index_image(img.manifest, b'{"os": "linux"}', img.open_layer)
    assert r.status == "failed" and r.error is not None and "config does not match" in r.error


def test_truncated_plain_tar_inside_an_unread_file_fails() -> None:
    layer = Layer().file("a", "1").file("blob.bin", b"z" * 20000).tar_bytes()
    r = run([(layer[:6000], None)])
    assert r.status == "failed"
    assert r.error is not None and "truncated" in r.error


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_in_every_tar_format(fmt: int) -> None:
    """GNU ././@LongLink, PAX path records and the ustar prefix field all give the full path."""
    deep = "/".join(["d" * 30] * 4) + "/node_modules/pkg"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        data = b'{"name": "pkg", "version": "1.0.0"}'
        info = tarfile.TarInfo(f"{deep}/package.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        if fmt != tarfile.USTAR_FORMAT:  # ustar has no room for a long link target
            link = tarfile.TarInfo(f"{deep}/../../alias/node_modules/pkg/package.json")
            link.type, link.linkname = tarfile.LNKTYPE, f"{deep}/package.json"
            tar.addfile(link)
    r = run([(buf.getvalue(), "gzip")])
    assert r.status == "done", r.error
    [pkg] = r.packages
    expected = [f"/{deep}/package.json"]
    if fmt != tarfile.USTAR_FORMAT:
        expected.append("/" + "/".join(["d" * 30] * 4) + "/alias/node_modules/pkg/package.json")
    assert pkg.paths == sorted(expected)


def test_bad_header_checksum_is_corrupt() -> None:
    tar = bytearray(Layer().file("a", "1").tar_bytes())
    pax_header_blocks = 0 if tar[156:157] != b"x" else 1 + (int(tar[124:135], 8) + 511) // 512
    tar[pax_header_blocks * 512 + 0] ^= 0x01  # flip a bit in the name; the checksum no longer matches
    r = run([(bytes(tar), None)])
    assert r.status == "failed" and r.error is not None and "checksum" in r.error
