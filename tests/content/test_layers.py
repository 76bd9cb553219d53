"""Cross-layer correlation on real tar layers: a secret deleted by a later layer is reported
as removed there and still present in the layer that added it."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from hallmark.content import (
    ContentScanner,
    LayerHistory,
    correlate_layers,
    iter_tar_layer,
    scan_layers,
    still_downloadable,
)

from .conftest import FakeSecrets, eicar


def _tar(entries: list[tuple[str, bytes | None, int]], gz: bool = False) -> bytes:
    """(name, data or None for a directory, mode) -> tar bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw) if gz else raw


def test_deleted_secret_is_reported_with_both_layers(
    scanner: ContentScanner, fake: FakeSecrets, tmp_path: Path
) -> None:
    env = f"GITHUB_TOKEN={fake.github}\n".encode()
    layers = [
        ("sha256:l0", _tar([("app/", None, 0o755), ("app/.env", env, 0o644), ("tmp/", None, 0o1777)], gz=True)),
        ("sha256:l1", _tar([("app/.wh..env", b"", 0o644), ("app/run.sh", b"#!/bin/sh\nexec app\n", 0o755)])),
        ("sha256:l2", _tar([("etc/app/key.pem", fake.pem.encode(), 0o600), ("tmp/eicar.com", eicar(), 0o644)])),
    ]
    paths = []
    for i, (_, data) in enumerate(layers):
        p = tmp_path / f"layer{i}.tar"
        p.write_bytes(data)
        paths.append((layers[i][0], p))
    out = scan_layers(scanner, paths, {"config": {"User": "app", "Healthcheck": {"Test": ["CMD", "true"]}}})
    got = sorted((f.rule_id, f.path, f.layer_index, f.status, f.removed_in_layer) for f in out.findings)
    assert got == [
        ("Hallmark_EICAR_Test_File", "/tmp/eicar.com", 2, "present", None),
        ("github-pat", "/app/.env", 0, "removed", 1),
        ("private-key", "/etc/app/key.pem", 2, "present", None),
    ]
    removed = still_downloadable(out.findings)
    assert len(removed) == 1
    assert removed[0].layer_digest == "sha256:l0"
    assert "removed in layer 1, still present in layer 0" in removed[0].message


def test_modes_from_tar_headers(scanner: ContentScanner) -> None:
    layer = _tar(
        [
            ("usr/bin/", None, 0o755),
            ("usr/bin/su", b"\x7fELF\x02", 0o4755),
            ("var/shared/", None, 0o777),
            ("tmp/", None, 0o1777),
            ("etc/app.conf", b"x=1\n", 0o666),
        ]
    )
    out = scan_layers(scanner, [("sha256:l0", io.BytesIO(layer))])
    got = sorted((f.rule_id, f.path) for f in out.findings)
    assert got == [
        ("setuid-file", "/usr/bin/su"),
        ("world-writable", "/etc/app.conf"),
        ("world-writable", "/var/shared"),
    ]


def test_iter_tar_layer_streams_plain_and_gzip() -> None:
    entries = [("a/", None, 0o755), ("a/b.txt", b"hello", 0o640)]
    for gz in (False, True):
        seen = [
            (e.name, e.kind, e.size, e.mode, e.reader.read() if e.reader else None)
            for e in iter_tar_layer(io.BytesIO(_tar(entries, gz=gz)))
        ]
        assert seen == [("a", "dir", 0, 0o755, None), ("a/b.txt", "file", 5, 0o640, b"hello")]


def test_layer_history_rules() -> None:
    h = LayerHistory()
    h.record_tar_member(0, "etc/secret.conf")
    h.record_tar_member(0, "opt/data/key")
    h.record_tar_member(0, "srv/www/token.txt")
    h.record_tar_member(0, "home/u/.netrc")
    h.record_tar_member(1, "etc/secret.conf")  # overwritten
    h.record_tar_member(2, "opt/.wh.data")  # whole directory deleted
    h.record_tar_member(3, "srv/www/.wh..wh..opq")  # directory made opaque...
    h.record_tar_member(3, "srv/www/index.html")
    h.record_tar_member(4, "home/u/.wh..netrc")
    h.record_tar_member(5, "home/u/.netrc")  # re-created after deletion
    assert h.fate("/etc/secret.conf", 0) == ("replaced", 1)
    assert h.fate("/etc/secret.conf", 1) == ("present", None)
    assert h.fate("/opt/data/key", 0) == ("removed", 2)
    assert h.fate("/srv/www/token.txt", 0) == ("removed", 3)
    assert h.fate("/srv/www/index.html", 3) == ("present", None)
    assert h.fate("/home/u/.netrc", 0) == ("removed", 4)  # the first later event decides
    assert h.fate("/home/u/.netrc", 5) == ("present", None)


def test_correlate_keeps_config_and_maps_archive_members(scanner: ContentScanner) -> None:
    h = LayerHistory()
    h.record_tar_member(0, "app/lib.jar")
    h.record_tar_member(1, "app/.wh.lib.jar")
    from hallmark.content import Finding

    member = Finding(
        kind="malware",
        rule_id="r",
        severity="high",
        title="t",
        engine="yara",
        path="/app/lib.jar!/x/y.class",
        layer_index=0,
    )
    config = Finding(
        kind="config", rule_id="root-user", severity="high", title="t", engine="hallmark", location="config.User"
    )
    a, b = correlate_layers([member, config], h)
    assert (a.status, a.removed_in_layer) == ("removed", 1)
    assert b == config
