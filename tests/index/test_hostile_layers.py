"""Hostile layers (issue 11, items 4-6): bad sizes, huge package databases, odd names.

Each costs a bounded amount, once: a clear ``index failed: <reason>`` or a warning, never a
hang, never a whole image lost to one odd file name.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Sequence

import orjson
import pytest

from hallmark.index import IndexResult, Limits, MemoryCache, index_image, iter_layer
from hallmark.index.sbom import to_cyclonedx, to_hallmark_json, to_spdx
from hallmark.oci.source import Descriptor
from tests.index.imagebuilder import Image, Layer, build_image, make_jar, pom, sha256


def run(layers: Sequence[tuple[bytes, str | None]], limits: Limits | None = None, **kw: object) -> IndexResult:
    img = build_image(list(layers), **kw)  # type: ignore[arg-type]
    return index_image(img.manifest, img.config, img.open_layer, limits=limits)


def pax_tar(name: str, data: bytes, pax: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.pax_headers = pax
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def dpkg_status(n: int) -> bytes:
    return b"".join(
        b"Package: p%d\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.%d\n\n" % (i, i) for i in range(n)
    )


# -- item 4: sizes ------------------------------------------------------------------------------------


def test_negative_pax_size_fails_at_once_instead_of_rereading_the_same_header() -> None:
    """PAX header (2 blocks) + file header = 1536 bytes: a size of -1536 used to seek back to the
    PAX header and read the same entry again and again until the entry limit (minutes per image)."""
    tar = pax_tar("a", b"x", {"size": "-1536"})
    r = run([(tar, "gzip")], limits=Limits(max_entries_per_layer=1000))
    assert r.status == "failed"
    assert r.error is not None and "bad PAX size" in r.error, r.error


@pytest.mark.parametrize("value", ["-1", "+5", " 5", "1_0", "0x10", "", "5 "])
def test_pax_size_must_be_a_plain_decimal(value: str) -> None:
    r = run([(pax_tar("a", b"x", {"size": value}), None)])
    assert r.status == "failed"
    assert r.error is not None and "bad PAX size" in r.error


def test_read_position_never_moves_backwards() -> None:
    from hallmark.index.walker import TarReader

    tar = Layer().file("a", b"1" * 700).dir("d").file("d/b", b"2" * 3000).symlink("s", "a").tar_bytes()
    reader = TarReader(io.BytesIO(tar), "t")
    seen = [reader.offset]
    while reader.next() is not None:
        seen.append(reader.offset)
    assert seen == sorted(seen) and seen[-1] > 0


def test_gnu_sparse_file_with_extension_headers_keeps_the_stream_in_step() -> None:
    """An old-GNU sparse member with more than 4 holes has extension blocks before its data."""
    buf = io.BytesIO()
    sparse = bytearray(512)
    sparse[0:6] = b"sparse"
    sparse[100:108] = b"0000644\0"
    data = b"D" * 1024
    sparse[124:136] = b"%011o\0" % len(data)
    sparse[156:157] = b"S"
    sparse[257:265] = b"ustar  \0"
    for i in range(4):  # four map entries in the header, then one extension block
        sparse[386 + 24 * i : 398 + 24 * i] = b"%011o\0" % (i * 4096)
        sparse[398 + 24 * i : 410 + 24 * i] = b"%011o\0" % 128
    sparse[482] = 1
    sparse[483:495] = b"%011o\0" % (1 << 20)
    sparse[148:156] = b"        "
    sparse[148:156] = b"%06o\0 " % sum(sparse)
    ext = bytearray(512)
    ext[0:12] = b"%011o\0" % 65536
    ext[12:24] = b"%011o\0" % 512
    buf.write(bytes(sparse) + bytes(ext) + data)
    buf.write(Layer().file("var/lib/dpkg/status", b"Package: a\nVersion: 1\n").tar_bytes())
    r = run([(buf.getvalue(), None)])
    assert r.status == "done", r.error
    assert [p.name for p in r.packages] == ["a"]
    assert any("sparse file not inspected" in w for w in r.warnings)


# -- item 5: caps, budgets, failure caching -------------------------------------------------------------


def test_dpkg_status_over_the_package_cap_fails_with_the_reason() -> None:
    layer = Layer().file("var/lib/dpkg/status", dpkg_status(5000)).tar_bytes()
    r = run([(layer, "gzip")], limits=Limits(max_packages_per_image=1000))
    assert r.status == "failed"  # never "done" with a silently cut inventory
    assert r.failure is not None and "image cap" in r.failure and "more than 1000 packages" in r.failure


def test_package_cap_counts_all_layers() -> None:
    one = Layer().file("var/lib/dpkg/status", dpkg_status(600)).tar_bytes()
    two = Layer().file("usr/lib/x/status.d/other", b"").file("var/lib/dpkg/status", dpkg_status(601)).tar_bytes()
    r = run([(one, None), (two, None)], limits=Limits(max_packages_per_image=1000))
    assert r.status == "failed" and r.error is not None and "more than 1000 packages" in r.error


def test_dpkg_parser_keeps_what_it_used_to() -> None:
    from hallmark.index.detectors.dpkg import stanzas

    text = (
        b"Package: libssl3\nStatus: install ok installed\nSource: openssl (3.0.11-1)\nVersion: 3.0.11-1+b1\n"
        b"Description: toolkit\n a continuation: with colon\n .\n\n \t\n"
        b"package: lower\nVERSION: 2\n\n\n"
        b"Package: caf\xe9\nVersion: 1\n"
    )
    got = list(stanzas(text))
    assert got == [
        {
            "Package": "libssl3",
            "Status": "install ok installed",
            "Source": "openssl (3.0.11-1)",
            "Version": "3.0.11-1+b1",
        },
        {"Package": "lower", "Version": "2"},
        {"Package": "caf\ufffd", "Version": "1"},
    ]


def test_entries_and_path_bytes_are_capped_per_image() -> None:
    a = Layer()
    b = Layer()
    for i in range(60):
        a.file(f"a/{i}", b"")
        b.file(f"b/{i}", b"")
    layers = [(a.tar_bytes(), None), (b.tar_bytes(), None)]
    r = run(layers, limits=Limits(max_entries_per_image=100))
    assert r.status == "failed" and r.error is not None and "more than 100 entries in all layers" in r.error
    r = run(layers, limits=Limits(max_path_bytes_per_image=300))
    assert r.status == "failed" and r.error is not None and "bytes of entry names" in r.error
    assert run(layers).status == "done"


def test_nested_archive_bytes_are_capped_per_image() -> None:
    inner = make_jar({**pom("g", "inner", "1"), "pad.bin": bytes(range(256)) * 64})
    war = make_jar({**pom("g", "web", "1"), **{f"WEB-INF/lib/i{i}.jar": inner for i in range(5)}})
    layer = Layer().file("app/a.war", war).tar_bytes()
    r = run([(layer, None)], limits=Limits(max_nested_archive_bytes=3 * len(inner)))
    assert r.status == "failed" and r.error is not None and "archives nested in archives" in r.error
    assert run([(layer, None)]).status == "done"


def test_nested_archive_depth_comes_from_the_limits() -> None:
    jar = make_jar({**pom("g", "leaf", "1")})
    for depth in range(3):
        jar = make_jar({**pom("g", f"l{depth}", "1"), f"lib/x{depth}.jar": jar})
    layer = Layer().file("app/a.jar", jar).tar_bytes()
    r = run([(layer, None)], limits=Limits(max_nested_archive_depth=1))
    assert r.status == "done"
    assert {p.name for p in r.packages} == {"g:l2", "g:l1"}
    assert any("nested deeper than 1" in w for w in r.warnings)


def test_memory_budget_is_enforced() -> None:
    layer = Layer().file("var/lib/dpkg/status", dpkg_status(300)).tar_bytes()
    r = run([(layer, None)], limits=Limits(max_job_memory_bytes=100_000))
    assert r.status == "failed" and r.error is not None and "job budget" in r.error and "memory" in r.error


class FakeClock:
    """Time moves ``step`` seconds each time it is read: the budget runs out after a few reads."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def many_files(n: int) -> bytes:
    layer = Layer()
    for i in range(n):
        layer.file(f"f/{i}", b"")
    return layer.tar_bytes()


def test_wall_clock_budget_fails_the_job_with_the_reason() -> None:
    from hallmark.index.limits import Budget

    img = build_image([(many_files(2000), None)])
    budget = Budget(Limits(max_job_seconds=10), clock=FakeClock(1.0))
    r = index_image(img.manifest, img.config, img.open_layer, budget=budget)
    assert r.status == "failed" and r.error is not None and "longer than 10 seconds" in r.error


def test_a_first_slice_running_out_is_deferred_not_failed_nor_cached() -> None:
    from hallmark.index.limits import Budget

    img = build_image([(many_files(2000), None)])
    cache = MemoryCache()
    budget = Budget(Limits(), clock=FakeClock(1.0), seconds=5, final=False)
    r = index_image(img.manifest, img.config, img.open_layer, cache=cache, budget=budget)
    assert r.status == "deferred"
    assert cache.docs == {}
    assert index_image(img.manifest, img.config, img.open_layer, cache=cache).status == "done"


def _opener(img: Image, forbidden: set[str], opened: list[str]):
    def open_layer(digest: str) -> io.BytesIO:
        opened.append(digest)
        if digest in forbidden:
            raise AssertionError(f"layer {digest} read again")
        return img.open_layer(digest)

    return open_layer


@pytest.mark.parametrize("with_hook", [False, True])
def test_a_failed_layer_is_cached_and_costs_once(with_hook: bool) -> None:
    hostile = Layer().file("var/lib/dpkg/status", dpkg_status(50)).tar_bytes()
    good = Layer().file("etc/hostname", b"x").tar_bytes()
    limits = Limits(max_packages_per_image=10)
    cache = MemoryCache()
    first = build_image([(good, None), (hostile, "gzip")])
    r1 = index_image(first.manifest, first.config, first.open_layer, cache=cache, limits=limits)
    assert r1.status == "failed" and r1.error is not None and "more than 10 packages" in r1.error
    # Another image (other config, so another manifest) reusing the hostile layer: not read again.
    second = build_image([(hostile, "gzip")], arch="arm64")
    opened: list[str] = []
    hook = (lambda e, s: None) if with_hook else None
    r2 = index_image(
        second.manifest,
        second.config,
        _opener(second, set(second.layer_digests), opened),
        cache=cache,
        limits=limits,
        on_entry=hook,
    )
    assert r2.status == "failed" and r2.error == r1.error
    assert opened == []
    # The same image again: the image-level failure is cached too.
    r3 = index_image(
        first.manifest, first.config, _opener(first, set(first.layer_digests), opened), cache=cache, on_entry=hook
    )
    assert r3.status == "failed" and opened == []


def test_a_failure_from_bytes_not_matching_the_digest_is_not_cached() -> None:
    good = Layer().file("a", "1").tar_bytes()
    img = build_image([(good, None)], blob_override={0: Layer().file("a", "2").tar_bytes()})
    cache = MemoryCache()
    r = index_image(img.manifest, img.config, img.open_layer, cache=cache)
    assert r.status == "failed" and r.error is not None and "does not match its digest" in r.error
    assert cache.docs == {}


def test_a_layer_failing_on_its_own_is_cached_by_layer_but_an_image_cap_is_not() -> None:
    one = Layer().file("var/lib/dpkg/status", dpkg_status(8)).tar_bytes()
    two = Layer().file("var/lib/dpkg/status", dpkg_status(9)).tar_bytes()
    cache = MemoryCache()
    img = build_image([(one, None), (two, None)])
    r = index_image(img.manifest, img.config, img.open_layer, cache=cache, limits=Limits(max_packages_per_image=10))
    assert r.status == "failed"
    # Layer "two" alone is within the cap: it must not be remembered as failed.
    alone = build_image([(two, None)])
    r2 = index_image(
        alone.manifest, alone.config, alone.open_layer, cache=cache, limits=Limits(max_packages_per_image=10)
    )
    assert r2.status == "done" and len(r2.packages) == 9


def test_packages_in_a_file_rewritten_by_every_layer_are_dated_to_the_first_layer() -> None:
    """Dating looks each package up in a set per earlier write (it compared every pair before)."""
    status = dpkg_status(3000)
    layers: list[tuple[bytes, str | None]] = [(Layer().file("var/lib/dpkg/status", status).tar_bytes(), None)] * 3
    layers[1] = (Layer().file("var/lib/dpkg/status", status).file("x", str(1)).tar_bytes(), None)
    layers[2] = (Layer().file("var/lib/dpkg/status", status).file("x", str(2)).tar_bytes(), None)
    r = run(layers)
    assert r.status == "done" and len(r.packages) == 3000
    first = json.loads(build_image(list(layers)).manifest)["layers"][0]["digest"]
    assert all(p.layer == first for p in r.packages)


# -- item 6: names ------------------------------------------------------------------------------------


def latin1_tar(names: list[bytes], data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for raw in names:
            info = tarfile.TarInfo(raw.decode("latin-1"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_latin1_names_index_and_cache_byte_exact() -> None:
    base = latin1_tar([b"usr/share/caf\xe9.txt", b"opt/na\xefve/lib/python/x-1.0.dist-info/METADATA"], b"")
    meta = Layer().file("opt/na\xefve/lib/python/ok-1.0.dist-info/METADATA", "Name: ok\nVersion: 1.0\n")
    dist = latin1_tar([b"opt/na\xefve/lib/python/y-2.0.dist-info/METADATA"], b"Name: y\nVersion: 2.0\n")
    top = latin1_tar([b"usr/share/.wh.caf\xe9.txt"], b"")
    img = build_image([(base, "gzip"), (meta.tar_bytes(), None), (dist, "zstd"), (top, None)])
    cache = MemoryCache()
    r = index_image(img.manifest, img.config, img.open_layer, cache=cache)
    assert r.status == "done", r.error
    y = next(p for p in r.packages if p.name == "y")
    assert y.paths == ["/opt/na\\xefve/lib/python/y-2.0.dist-info"]  # bytes shown as \xNN in JSON
    orjson.dumps(r.to_json())  # every string of the result encodes
    for render in (to_cyclonedx, to_spdx, to_hallmark_json):
        assert "na\\\\xefve" in render(r, "img")  # JSON of the escaped name
    # The cached layer facts give the exact bytes back: the whiteout still matches the Latin-1 name.
    again = index_image(img.manifest, img.config, img.open_layer, cache=cache)
    assert again == r
    from hallmark.index.engine import LayerFacts
    from hallmark.index.indexer import INDEXER_VERSION
    from hallmark.index.names import unpack_doc

    doc = cache.get("layer", INDEXER_VERSION, img.layer_digests[0])
    assert doc is not None
    facts = LayerFacts.from_json(unpack_doc(doc))
    assert [p.encode("utf-8", "surrogateescape") for p, _k, _l in facts.entries] == [
        b"usr/share/caf\xe9.txt",
        b"opt/na\xefve/lib/python/x-1.0.dist-info/METADATA",
    ]


def test_walker_yields_byte_exact_names() -> None:
    tar = latin1_tar([b"a/\xff\xfe"])
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar", sha256(tar), len(tar))
    [entry] = list(iter_layer(io.BytesIO(tar), desc, 0))
    assert entry.path.encode("utf-8", "surrogateescape") == b"a/\xff\xfe"


def test_absolute_member_paths_are_relative_to_the_image_root() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [
            ("/var/lib/dpkg/status", b"Package: a\nVersion: 1\n"),
            ("//etc/os-release", b"ID=debian\nVERSION_ID=12\n"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("copy")
        link.type, link.linkname = tarfile.LNKTYPE, "/var/lib/dpkg/status"
        tar.addfile(link)
    r = run([(buf.getvalue(), "gzip")])
    assert r.status == "done", r.error
    assert [p.name for p in r.packages] == ["a"]
    assert r.distro is not None and r.distro.id == "debian"


def test_one_unusable_entry_is_skipped_with_a_warning() -> None:
    bad_nul = pax_tar("x", b"", {"path": "etc/bad\x00name"})
    too_long = Layer().file("d/" + "n" * 300, b"").tar_bytes()
    dpkg = Layer().file("var/lib/dpkg/status", b"Package: a\nVersion: 1\n").tar_bytes()
    r = run([(bad_nul, None), (too_long, None), (dpkg, None)], limits=Limits(max_path_length=200))
    assert r.status == "done", r.error
    assert [p.name for p in r.packages] == ["a"]
    assert any("entry skipped" in w and "NUL" in w for w in r.warnings), r.warnings
    assert any("entry skipped" in w and "longer than 200" in w for w in r.warnings), r.warnings


def test_reasons_and_warnings_with_raw_bytes_are_json_safe() -> None:
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("META-INF/maven/g/a/pom.properties", "groupId=g\nartifactId=a\nversion=1\n")
    layers = [(latin1_tar([b"app/\xe9.jar", b"app/\xe9-broken.jar"], zbuf.getvalue()[:40]), None)]
    r = run(layers)
    assert r.status == "done"
    assert any("\\xe9" in w for w in r.warnings)
    orjson.dumps(r.to_json())
    traversal = latin1_tar([b"../\xe9"])
    r = run([(traversal, None)])
    assert r.status == "failed" and r.error is not None and "\\xe9" in r.error
    orjson.dumps(r.to_json())


def test_warnings_of_a_layer_are_bounded() -> None:
    names = [b"d/" + b"%04d" % i + b"n" * 300 for i in range(50)]
    bad = latin1_tar(names, b"")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(1100):
            z.writestr(f"x/{i}.bin", b"\0" * 300_000)  # each over the size/ratio guard: one warning each
    jar = Layer().file("app/a.jar", zbuf.getvalue()).tar_bytes()
    r = run([(bad, None), (jar, None)], limits=Limits(max_path_length=200))
    assert r.status == "done"
    skips = [w for w in r.warnings if "entry skipped" in w]
    assert len(skips) == 20 and any("30 more entries skipped" in w for w in r.warnings)
    assert len(r.warnings) <= 20 + 1 + 1000 + 1
    assert any("more warnings for layer" in w for w in r.warnings)
