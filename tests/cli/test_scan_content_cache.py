"""``hallmark scan`` keeps each layer's content-check results in the user cache, keyed by the
layer digest, the rules digest, the options and the checking code: a cached run reports exactly
what a fresh run reports (findings, their layers and whiteout status, skips, rule warnings; the
whole report), the cache is really what answers (a fully cached image is not read at all), a
rule change or a corrupt entry makes a fresh check, and a cached layer at another position in
another image gets that image's layer index."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hallmark.cli import app
from hallmark.content import ContentScanner
from tests.index.imagebuilder import dist_info
from tests.ocihelp import OCI_MANIFEST, image, sha256

runner = CliRunner()
TOKEN = "hmcachetest_" + "k3v9q2x7m4p8w1z6r5t0y2u8"
LATE_TOKEN = "hmcachetest_" + "a8s7d6f5g4h3j2k1l0q9w8e7"
NEW_RULE_TOKEN = "hmnewrule_" + "z1x2c3v4b5n6m7q8w9e0r1t2"
MALWARE = b"prefix HALLMARK-CACHE-TEST-MALWARE-MARKER suffix\n"
BLOCKED = b"a file on the blocklist\n"

SECRET_RULE = """
[[rules]]
id = "hallmark-cache-test-token"
description = "Cache test token"
regex = '''hmcachetest_[a-z0-9]{24}'''
keywords = ["hmcachetest_"]
"""
NEW_SECRET_RULE = """
[[rules]]
id = "hallmark-new-rule-token"
description = "Token of a rule added later"
regex = '''hmnewrule_[a-z0-9]{24}'''
keywords = ["hmnewrule_"]
"""
YARA_RULE = """
rule Cache_Test_Marker
{
    meta:
        description = "cache test marker"
        severity = "critical"
    strings:
        $m = "HALLMARK-CACHE-TEST-MALWARE-MARKER"
    condition:
        $m
}
"""


def layer(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    """A gzip tar layer of (name, content or None for a directory, mode) entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, content, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 0
            if content is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


def jar_with(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, data)
    return buf.getvalue()


BASE = layer(
    [
        ("app", None, 0o755),
        ("app/config.env", f"TOKEN={TOKEN}\nOTHER={NEW_RULE_TOKEN}\n".encode(), 0o644),
        ("usr/bin/evil", MALWARE, 0o755),
        ("opt/blocked.bin", BLOCKED, 0o644),
        ("usr/bin/su-like", b"#!/bin/sh\n", 0o4755),
        ("shared-tmp", None, 0o777),
        ("etc/removed.key", f"key: {TOKEN}\n".encode(), 0o600),
        ("lib/plugin.jar", jar_with("inner/payload.txt", MALWARE), 0o644),
        ("usr/share/blob.bin", b"\0binary\0" * 100, 0o644),
        ("srv/app/deep/creds.txt", f"token {TOKEN}\n".encode(), 0o644),
        ("data/cache/creds.txt", f"token {TOKEN}\n".encode(), 0o644),
    ]
)
TOP = layer(
    [
        ("etc/.wh.removed.key", b"", 0o644),
        ("app/late.txt", f"late {LATE_TOKEN}\n".encode(), 0o644),
        ("srv/.wh.app", b"", 0o644),  # a folder above the finding whited out
        ("data/cache/.wh..wh..opq", b"", 0o644),  # the finding's folder made opaque
    ]
)
EXTRA = layer([("srv/readme.txt", b"nothing to see\n", 0o644)])
CONFIG = {"config": {"Env": [f"API_TOKEN={TOKEN}"], "User": "root"}}


def write_oci(root: Path, layers: list[bytes], config: dict[str, Any]) -> str:
    cfg, manifest = image(layers, config)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (*layers, cfg, manifest):
        (blobs / sha256(data)[7:]).write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest)}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return f"oci:{root}"


def make_rules(root: Path, *, broken_yara: bool = False, new_rule: bool = False) -> str:
    (root / "secrets").mkdir(parents=True)
    (root / "secrets" / "test.toml").write_text(SECRET_RULE + (NEW_SECRET_RULE if new_rule else ""))
    (root / "yara").mkdir()
    (root / "yara" / "test.yar").write_text(YARA_RULE)
    if broken_yara:
        (root / "yara" / "broken.yar").write_text("rule Broken { condition: no_such_identifier }")
    (root / "blocklist").mkdir()
    (root / "blocklist" / "bad.txt").write_text(f"{hashlib.sha256(BLOCKED).hexdigest()} test-blocked-file\n")
    return str(root)


def content(ref: str, rules: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The content part of ``hallmark scan REF`` with ``cache`` as XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    res = runner.invoke(app, ["scan", ref, "--scanners", "malware,secret,config", "--rules", rules, "-f", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    return {"findings": report["content_findings"], "scan": report["content_scan"]}


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "hallmark" / "content").rglob("*.json"))


@pytest.mark.parametrize("broken_yara", [False, True], ids=["clean-rules", "a-yara-file-that-does-not-compile"])
def test_cached_run_reports_what_a_fresh_run_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken_yara: bool
) -> None:
    ref = write_oci(tmp_path / "img", [BASE, TOP], CONFIG)
    rules = make_rules(tmp_path / "rules", broken_yara=broken_yara)
    cache = tmp_path / "cache"
    fresh = content(ref, rules, cache, monkeypatch)
    assert len(entries(cache)) == 2  # one per layer
    cached = content(ref, rules, cache, monkeypatch)
    assert cached == fresh

    found = {(f["kind"], f["rule_id"], f.get("path") or f.get("location"), f.get("status")) for f in fresh["findings"]}
    assert ("secret", "hallmark-cache-test-token", "/app/config.env", "present") in found
    assert ("secret", "hallmark-cache-test-token", "/etc/removed.key", "removed") in found
    assert ("secret", "hallmark-cache-test-token", "/app/late.txt", "present") in found
    assert ("secret", "hallmark-cache-test-token", "config.Env[0]", None) in found
    assert ("malware", "Cache_Test_Marker", "/usr/bin/evil", "present") in found
    assert ("malware", "Cache_Test_Marker", "/lib/plugin.jar!/inner/payload.txt", "present") in found
    assert any(k == "malware" and p == "/opt/blocked.bin" for k, _, p, _ in found)
    assert ("config", "setuid-file", "/usr/bin/su-like", "present") in found
    assert ("config", "world-writable", "/shared-tmp", "present") in found
    assert ("secret", "hallmark-cache-test-token", "/srv/app/deep/creds.txt", "removed") in found
    assert ("secret", "hallmark-cache-test-token", "/data/cache/creds.txt", "removed") in found
    late = next(f for f in fresh["findings"] if f.get("path") == "/app/late.txt")
    assert late["layer_index"] == 1
    assert bool(fresh["scan"]["rule_warnings"]) == broken_yara


def test_cached_layers_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = write_oci(tmp_path / "img", [BASE, TOP], CONFIG)
    rules = make_rules(tmp_path / "rules")
    cache = tmp_path / "cache"
    fresh = content(ref, rules, cache, monkeypatch)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cached layer was checked again")

    monkeypatch.setattr(ContentScanner, "scan_file", refuse)
    assert content(ref, rules, cache, monkeypatch) == fresh


def test_a_rule_change_checks_the_layers_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = write_oci(tmp_path / "img", [BASE, TOP], CONFIG)
    cache = tmp_path / "cache"
    before = content(ref, make_rules(tmp_path / "rules"), cache, monkeypatch)
    after = content(ref, make_rules(tmp_path / "rules2", new_rule=True), cache, monkeypatch)
    assert not any(f["rule_id"] == "hallmark-new-rule-token" for f in before["findings"])
    assert any(f["rule_id"] == "hallmark-new-rule-token" for f in after["findings"])
    assert len(entries(cache)) == 4


def test_a_corrupt_entry_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = write_oci(tmp_path / "img", [BASE, TOP], CONFIG)
    rules = make_rules(tmp_path / "rules")
    cache = tmp_path / "cache"
    fresh = content(ref, rules, cache, monkeypatch)
    for entry in entries(cache):
        entry.write_text('{"layer": "sha256:')  # truncated by a crash, say
    assert content(ref, rules, cache, monkeypatch) == fresh
    assert all(json.loads(e.read_text())["findings"] is not None for e in entries(cache))  # rewritten


def test_a_cached_layer_at_another_index_gets_that_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = make_rules(tmp_path / "rules")
    shared = tmp_path / "shared-cache"
    content(write_oci(tmp_path / "a", [BASE, TOP], CONFIG), rules, shared, monkeypatch)
    other = write_oci(tmp_path / "b", [EXTRA, BASE], CONFIG)  # BASE now at index 1, nothing removes its key
    from_cache = content(other, rules, shared, monkeypatch)
    fresh = content(other, rules, tmp_path / "empty-cache", monkeypatch)
    assert from_cache == fresh
    removed = next(f for f in fresh["findings"] if f.get("path") == "/etc/removed.key")
    assert (removed["layer_index"], removed["status"]) == (1, "present")


RECORD = {
    "id": "HMTEST-2026-0042",
    "modified": "2026-01-01T00:00:00Z",
    "published": "2026-01-01T00:00:00Z",
    "summary": "a test advisory",
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "cachedpkg"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}],
        }
    ],
}


def test_a_fully_cached_image_gives_the_same_report_without_reading_a_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db"
    (db / "osv" / "PyPI").mkdir(parents=True)
    with zipfile.ZipFile(db / "osv" / "PyPI" / "all.zip", "w") as z:
        z.writestr(f"{RECORD['id']}.json", json.dumps(RECORD))
    pkg = layer(
        [
            (
                "usr/lib/python3/dist-packages/cachedpkg-1.0.dist-info/METADATA",
                dist_info("cachedpkg", "1.0").encode(),
                0o644,
            )
        ]
    )
    layers = [BASE, layer([]), pkg, TOP]  # an empty layer has a (cached, empty) result too
    ref = write_oci(tmp_path / "img", layers, CONFIG)
    rules = make_rules(tmp_path / "rules")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def report() -> dict[str, Any]:
        res = runner.invoke(app, ["scan", ref, "--db", str(db), "--rules", rules, "-f", "json"])
        assert res.exit_code == 0, res.output
        doc: dict[str, Any] = json.loads(res.stdout)
        doc.pop("generated_at")
        return doc

    fresh = report()
    assert [f["advisory_id"] for f in fresh["findings"]] == ["HMTEST-2026-0042"]
    assert len(fresh["content_findings"]) > 5
    assert report() == fresh
    assert len(entries(tmp_path / "cache")) == len(layers)
    for data in layers:  # nothing left to read: both the index and the content checks come from the cache
        (tmp_path / "img" / "blobs" / "sha256" / sha256(data)[7:]).unlink()
    assert report() == fresh
