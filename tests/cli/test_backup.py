"""``hallmark backup`` / ``hallmark restore`` with real servers and skopeo.

Images pushed with skopeo are backed up while the server runs (and takes another push), restored
into a new folder that a new server serves: pulls give the same digests, and the same users and keys
still work. A damaged backup and a non-empty target are refused without writing anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from hallmark.backup import BackupError, restore, verify
from hallmark.backup import backup as run_backup
from hallmark.config import load_config
from hallmark.storage import FilesystemBlobStore
from tests.cli.clirun import hallmark
from tests.conftest import Server
from tests.ocihelp import sha256, tar_layer, write_oci_layout

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (make test installs it)")

FILESYSTEM = {"HALLMARK_STORAGE__DRIVER": "filesystem"}  # the embedded default, also in the S3 run of the suite


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, check=check, timeout=120
    )


def push(srv: Server, creds: str, layout: Path, ref: str) -> None:
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:v1", f"docker://{srv.host}/{ref}")


def test_backup_while_serving_then_restore_serves_the_same_images(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data, env=FILESYSTEM, access=True).start()
    creds = "admin:" + (data / "initial-admin-password").read_text().strip()
    images: dict[str, tuple[str, list[bytes]]] = {}
    for name, size in (("team/app", 1), ("team/big", 300)):
        layers = [tar_layer({f"{name}/file": bytes([i]) * 1024 * size}) for i in range(2)]
        layout = tmp_path / name.replace("/", "-")
        images[name] = (write_oci_layout(layout, "v1", layers), layers)
        push(srv, creds, layout, f"{name}:v1")
    late = tmp_path / "late"
    write_oci_layout(late, "v1", [tar_layer({"late": b"pushed during the backup" * 5000})])
    backup = tmp_path / "backup"
    (data / "cache").mkdir(exist_ok=True)
    (data / "cache" / "rebuilt.bin").write_bytes(b"per-machine cache, not backed up")
    try:
        pusher = threading.Thread(target=push, args=(srv, creds, late, "team/late:v1"))
        pusher.start()  # the server keeps taking pushes while the snapshot is made
        out = hallmark(data, "backup", str(backup), env=FILESYSTEM)
        pusher.join()
    finally:
        srv.stop()
    assert out.returncode == 0, out.stderr
    manifest = json.loads((backup / "backup.json").read_text())
    digests = {b["digest"] for b in manifest["blobs"]}
    for _, layers in images.values():
        assert {sha256(layer) for layer in layers} <= digests
    assert "data/database.json" in manifest["files"]
    assert not [f for f in manifest["files"] if f.startswith("data/cache/")]

    # A non-empty target is refused; so is a damaged backup, before anything is written (in-process: quicker).
    with pytest.raises(BackupError, match="not empty"):
        restore(load_config(environ={"HALLMARK_DATA_DIR": str(data)}), backup)
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    layer = images["team/app"][1][0]
    blob = damaged / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()
    blob.write_bytes(b"X" + blob.read_bytes()[1:])
    with pytest.raises(BackupError, match="does not match its digest"):
        restore(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "unused")}), damaged)
    assert not (tmp_path / "unused").exists()

    restored = tmp_path / "restored"
    res = hallmark(restored, "restore", str(backup), env=FILESYSTEM)
    assert res.returncode == 0, res.stderr
    srv2 = Server(restored, env=FILESYSTEM, access=True).start()
    try:
        for name, (digest, layers) in images.items():
            ref = f"docker://{srv2.host}/{name}:v1"
            raw = skopeo("inspect", "--tls-verify=false", "--creds", creds, "--raw", ref).stdout.encode()
            assert sha256(raw) == digest
        name = "team/big"
        pulled = tmp_path / "pulled"
        ref = f"docker://{srv2.host}/{name}:v1"
        skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, ref, f"oci:{pulled}:v1")
        for layer in images[name][1]:
            assert (pulled / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()).read_bytes() == layer
    finally:
        srv2.stop()

    # In-process: --link hard-links on the same filesystem (still verified); --force replaces a folder.
    restored_cfg = load_config(environ={"HALLMARK_DATA_DIR": str(restored)})
    linked = tmp_path / "linked"
    summary = run_backup(restored_cfg, linked, link=True)
    assert summary.linked == summary.blobs >= len(manifest["blobs"])  # (+ what the pipeline attached since)
    big = sha256(images["team/big"][1][0])
    live = FilesystemBlobStore(restored_cfg.blob_path).blob_path(big)
    assert (linked / "blobs/sha256" / big.split(":")[1]).stat().st_ino == live.stat().st_ino
    verify(linked)
    (restored / "stray").write_text("replaced by --force")
    restore(restored_cfg, linked, force=True)
    assert not (restored / "stray").exists() and (restored / "hallmark.db").is_file()


def test_a_folder_that_is_no_backup_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "not-a-backup").mkdir()
    res = hallmark(tmp_path / "data", "restore", str(tmp_path / "not-a-backup"), env=FILESYSTEM)
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]  # after the progress lines: the error, one line
    assert "Traceback" not in res.stderr and last.startswith("error: ") and "not a Hallmark backup" in last
    assert not (tmp_path / "data" / "hallmark.db").exists()  # nothing written
