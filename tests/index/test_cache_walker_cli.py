"""Layer/image caching, the generic walker for content checks, and the ``hallmark sbom`` command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hallmark.cli import app
from hallmark.index import FileCache, MemoryCache, index_image, walk_layers
from hallmark.index import indexer as indexer_mod
from hallmark.index.walker import FILE, OPAQUE, WHITEOUT
from hallmark.oci.source import ImageManifest
from tests.index.conftest import layer0, layer1
from tests.index.imagebuilder import Image, Layer, build_image, sha256, write_layout


class CountingOpener:
    def __init__(self, img: Image) -> None:
        self.img = img
        self.opened: list[str] = []

    def __call__(self, digest: str) -> io.BytesIO:
        self.opened.append(digest)
        return self.img.open_layer(digest)


@pytest.mark.parametrize("make_cache", [MemoryCache, "file"])
def test_shared_base_layer_is_read_once(tmp_path: Path, make_cache: object) -> None:
    cache = FileCache(str(tmp_path)) if make_cache == "file" else MemoryCache()
    base = layer0().tar_bytes()
    a = build_image(
        [(base, "gzip"), (Layer().file("x-1.dist-info/METADATA", "Name: x\nVersion: 1\n").tar_bytes(), None)]
    )
    b = build_image(
        [(base, "gzip"), (Layer().file("y-2.dist-info/METADATA", "Name: y\nVersion: 2\n").tar_bytes(), None)]
    )
    oa, ob = CountingOpener(a), CountingOpener(b)
    ra = index_image(a.manifest, a.config, oa, cache=cache)
    rb = index_image(b.manifest, b.config, ob, cache=cache)
    assert oa.opened == a.layer_digests
    assert ob.opened == [b.layer_digests[1]]  # the base layer came from the cache
    assert "x" in {p.name for p in ra.packages} and "y" in {p.name for p in rb.packages}
    # cached base-layer facts give the same answer as a fresh read
    fresh = index_image(b.manifest, b.config, b.open_layer)
    assert fresh.packages == rb.packages and fresh.distro == rb.distro

    # the whole image is cached too: no layer is opened at all the second time
    again = CountingOpener(b)
    assert index_image(b.manifest, b.config, again, cache=cache) == rb
    assert again.opened == []


def test_indexer_version_bump_invalidates(monkeypatch: pytest.MonkeyPatch, debian_image: Image) -> None:
    cache = MemoryCache()
    index_image(debian_image.manifest, debian_image.config, debian_image.open_layer, cache=cache)
    monkeypatch.setattr(indexer_mod, "INDEXER_VERSION", "999")
    opener = CountingOpener(debian_image)
    r = index_image(debian_image.manifest, debian_image.config, opener, cache=cache)
    assert opener.opened == debian_image.layer_digests and r.indexer_version == "999"


def test_failed_results_are_not_cached() -> None:
    cache = MemoryCache()
    good = Layer().file("a", "1").tar_bytes()
    img = build_image([(good, None)], blob_override={0: Layer().file("a", "2").tar_bytes()})
    assert index_image(img.manifest, img.config, img.open_layer, cache=cache).status == "failed"
    assert cache.docs == {}


def test_file_cache_ignores_damaged_entries(tmp_path: Path) -> None:
    cache = FileCache(str(tmp_path))
    digest = "sha256:" + "b" * 64
    cache.put("layer", "1", digest, {"k": 1})
    assert cache.get("layer", "1", digest) == {"k": 1}
    path = tmp_path / "layer" / "1" / "sha256" / ("b" * 64 + ".json.zst")
    path.write_bytes(b"garbage")
    assert cache.get("layer", "1", digest) is None
    with pytest.raises(ValueError):
        cache.get("layer", "1", "sha256:../../etc")


def test_walker_streams_every_file_with_layer_index(debian_image: Image) -> None:
    manifest = ImageManifest.parse(debian_image.manifest)
    seen: dict[str, tuple[int, bytes]] = {}
    kinds: list[tuple[str, str]] = []
    for e in walk_layers(manifest.layers, lambda d: debian_image.open_layer(d.digest)):
        if e.kind == FILE:
            with e.open() as f:
                seen[f"{e.layer_index}:{e.path}"] = (e.layer_index, f.read())
        elif e.kind in (WHITEOUT, OPAQUE):
            kinds.append((e.kind, e.path))
    # files later deleted are still yielded (a secret in a lower layer is still shipped)
    assert seen["0:usr/lib/python3/dist-packages/removeme-1.0.dist-info/METADATA"][0] == 0
    assert seen["1:app/node_modules/lodash/package.json"][1].startswith(b'{"name": "lodash"')
    assert ("whiteout", "app/lib/log4j-core-2.14.1.jar") in kinds and ("opaque", "opt/old") in kinds


def test_progress_callback_reaches_total(debian_image: Image) -> None:
    calls: list[tuple[int, int]] = []
    index_image(
        debian_image.manifest, debian_image.config, debian_image.open_layer, progress=lambda d, t: calls.append((d, t))
    )
    total = sum(len(debian_image.blobs[d]) for d in debian_image.layer_digests)
    assert calls and calls[-1] == (total, total)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


runner = CliRunner()


@pytest.fixture
def layout(tmp_path: Path, debian_image: Image) -> Path:
    write_layout(str(tmp_path / "layout"), {"12": debian_image})
    return tmp_path / "layout"


def test_cli_formats(layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "bom.json"
    res = runner.invoke(app, ["sbom", f"oci:{layout}:12", "--format", "cyclonedx", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["bomFormat"] == "CycloneDX"
    res = runner.invoke(app, ["sbom", f"oci:{layout}:12", "--format", "spdx"])
    assert res.exit_code == 0 and json.loads(res.stdout)["spdxVersion"] == "SPDX-2.3"
    res = runner.invoke(app, ["sbom", f"oci:{layout}:12", "--format", "json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["distro"]["id"] == "debian"
    res = runner.invoke(app, ["sbom", f"oci:{layout}:12"])
    assert res.exit_code == 0 and "libssl3" in res.stdout


def test_cli_cache_dir(layout: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for _ in range(2):
        res = runner.invoke(app, ["sbom", f"oci:{layout}:12", "-f", "json", "--cache-dir", str(cache)])
        assert res.exit_code == 0
    assert list((cache / "layer").rglob("*.json.zst")) and list((cache / "image").rglob("*.json.zst"))


def test_cli_failures(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sbom", f"oci:{tmp_path}/missing"])
    assert res.exit_code == 2 and "not an OCI layout" in res.output
    bad = build_image([(b"\x1f\x8b\x08\x00garbage", None)])
    write_layout(str(tmp_path / "bad"), {"x": bad})
    res = runner.invoke(app, ["sbom", f"oci:{tmp_path}/bad:x"])
    assert res.exit_code == 1 and "index failed:" in res.output


def test_base_layer_facts_are_independent_of_what_lies_above() -> None:
    """Per-layer caching is only sound if a layer's facts depend on its own bytes: check both orders."""
    from hallmark.index.detectors import all_detectors
    from hallmark.index.engine import scan_layer
    from hallmark.index.limits import Limits
    from hallmark.index.walker import iter_layer
    from hallmark.oci.source import Descriptor

    tar = layer1().tar_bytes()
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar", sha256(tar))
    facts = [
        scan_layer(iter_layer(io.BytesIO(tar), desc, i, Limits()), desc.digest, all_detectors(), Limits())
        for i in (0, 5)
    ]
    assert facts[0].to_json() == facts[1].to_json()


def test_on_entry_hook_sees_every_file_byte_for_byte(debian_image: Image) -> None:
    """Content checks can ride along on the indexer's single read: same bytes as a separate walk."""
    elf = b"\x7fELF" + b"\x02\x01\x01" + b"\0" * 200  # a non-Go ELF: peeked by the binary detectors
    extra = Layer().file("usr/bin/tool", elf, mode=0o755).file("usr/bin/script", b"#!/bin/sh\necho hi\n", mode=0o755)
    img = build_image(
        [(layer0().tar_bytes(), "gzip"), (layer1().tar_bytes(), "zstd"), (extra.tar_bytes(), None)],
    )
    via_hook: dict[tuple[int, str], bytes] = {}
    other: list[tuple[int, str, str]] = []

    def hook(entry, stream):
        if stream is None:
            other.append((entry.layer_index, entry.kind, entry.path))
        else:
            via_hook[(entry.layer_index, entry.path)] = stream.read()

    cache = MemoryCache()
    r = index_image(img.manifest, img.config, img.open_layer, on_entry=hook, cache=cache)
    assert r.status == "done"
    manifest = ImageManifest.parse(img.manifest)
    walked = {}
    for e in walk_layers(manifest.layers, lambda d: img.open_layer(d.digest)):
        if e.kind == FILE:
            with e.open() as f:
                walked[(e.layer_index, e.path)] = f.read()
    assert via_hook == walked
    assert via_hook[(2, "usr/bin/tool")] == elf
    assert (0, "symlink", "etc/os-release") in other
    # with a hook, a warm cache is not used: the hook still sees every layer
    via_hook.clear()
    index_image(img.manifest, img.config, img.open_layer, on_entry=hook, cache=cache)
    assert via_hook == walked


def test_layer_facts_json_is_asdict_and_round_trips() -> None:
    from dataclasses import asdict

    from hallmark.index.engine import Finding, LayerFacts
    from hallmark.model import Distro, Package

    pkg = Package("libc6", "2.31-13", "Debian", "pkg:deb/debian/libc6@2.31-13", paths=["var/lib/dpkg/status"])
    facts = LayerFacts(
        "sha256:" + "0" * 64,
        [("etc/os-release", "file", ""), ("bin/sh", "symlink", "dash")],
        {"var/lib/dpkg/status": [Finding("dpkg", [pkg], Distro("debian", "11"), 10)]},
        ["skipped one entry"],
    )
    doc = facts.to_json()
    assert doc == asdict(facts) | {"entries": [list(e) for e in facts.entries]}  # tuples written as lists
    assert json.loads(json.dumps(doc)) == doc
    assert LayerFacts.from_json(json.loads(json.dumps(doc))) == facts
