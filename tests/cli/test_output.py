"""What people read: tables by default, ``--json`` for scripts, empty results said, a db update summary."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.cli.clirun import hallmark
from tests.conftest import SHARED_DATA

GO_ONLY = {"HALLMARK_ADVISORIES__OSV_ECOSYSTEMS": '["Go"]', "HALLMARK_LIFECYCLE__ENDOFLIFE_URL": ""}


def _mirror(root: Path) -> Path:
    """A small mirror in the offline layout: OSV Go and the KEV catalogue."""
    (root / "osv" / "Go").mkdir(parents=True)
    shutil.copyfile(SHARED_DATA / "osv" / "Go" / "all.zip", root / "osv" / "Go" / "all.zip")
    (root / "kev").mkdir()
    shutil.copyfile(
        SHARED_DATA / "kev" / "known_exploited_vulnerabilities.json",
        root / "kev" / "known_exploited_vulnerabilities.json",
    )
    return root


def test_empty_results_say_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = hallmark(data, "db", "status")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no advisory set yet: run `hallmark db update`")
    r = hallmark(data, "catalog", "list")
    assert r.stdout.startswith("no images in the catalog yet: push one with `docker push")
    r = hallmark(data, "catalog", "list", "--stage", "approved")
    assert r.stdout.strip() == "no images match these filters"
    r = hallmark(data, "gc", "--dry-run")
    assert r.stdout.startswith("nothing to collect")
    assert json.loads(hallmark(data, "db", "status", "--json").stdout) == []
    assert json.loads(hallmark(data, "catalog", "list", "--json").stdout) == []
    assert json.loads(hallmark(data, "gc", "--json").stdout)["deleted"] == []


@pytest.mark.skipif(not (SHARED_DATA / "osv" / "Go").is_dir(), reason="shared advisory snapshot not present")
def test_update_summary_and_status_table(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mirror = _mirror(tmp_path / "mirror")
    r = hallmark(data, "db", "update", "--mirror", str(mirror), env=GO_ONLY)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # not a terminal: no progress bars
    first = r.stdout.splitlines()[0]
    assert first.startswith("advisory set 1 active: 4,274 advisories, imported ")
    assert f"from the mirror {mirror} in " in first and first.endswith(" s")
    row = next(ln for ln in r.stdout.splitlines() if "OSV Go" in ln)
    assert row.split()[2] == "4,274"
    assert ".tmp" not in r.stdout  # the work folder is gone once the set is active
    record = json.loads(hallmark(data, "db", "update", "--json", "--mirror", str(mirror), env=GO_ONLY).stdout)
    assert record["set"] == 2 and [s["source"] for s in record["stats"]] == ["osv/Go/all.zip"]
    status = hallmark(data, "db", "status", env=GO_ONLY)
    lines = status.stdout.splitlines()
    assert lines[0].split()[:4] == ["SET", "STATE", "IMPORTED", "ADVISORIES"]
    assert lines[2].split()[:2] == ["2", "active"] and "OSV 4,274" in lines[2]
    assert lines[3].split()[:2] == ["1", "-"]


def test_update_errors_name_the_feed_not_the_work_folder(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "osv" / "Go").mkdir(parents=True)
    with zipfile.ZipFile(mirror / "osv" / "Go" / "all.zip", "w") as zf:
        zf.writestr("GO-1.json", b"{}" * 100)
    raw = bytearray((mirror / "osv" / "Go" / "all.zip").read_bytes())
    raw[raw.index(b"{}") + 10] ^= 0xFF  # corrupt the member's data: the CRC check fails
    (mirror / "osv" / "Go" / "all.zip").write_bytes(bytes(raw))
    r = hallmark(tmp_path / "data", "db", "update", "--mirror", str(mirror), env=GO_ONLY)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: osv/Go/all.zip: corrupt member GO-1.json"


@pytest.mark.skipif(not (SHARED_DATA / "osv" / "Go").is_dir(), reason="shared advisory snapshot not present")
def test_progress_bars_on_a_terminal(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path / "mirror")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_") and k != "CI"}
    env.update(GO_ONLY, HALLMARK_DATA_DIR=str(tmp_path / "data"), TERM="xterm", COLUMNS="120")
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hallmark", "db", "update", "--mirror", str(mirror)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=follower,
        )
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        out, _ = proc.communicate(timeout=300)
    finally:
        os.close(leader)
    assert proc.returncode == 0
    assert b"advisory set 1 active" in out
    assert b"feeds" in drawn  # the bars were drawn on the terminal (and erased at the end)


def test_gc_table_lists_what_goes(tmp_path: Path) -> None:
    import httpx

    from tests.conftest import Server
    from tests.ocihelp import push_blob

    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data, env={"HALLMARK_PIPELINE__ENABLED": "false"}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            orphan = push_blob(c, "gc/app", b"pushed but never used by a manifest")
    finally:
        srv.stop()
    dry = hallmark(data, "gc", "--dry-run", "--grace-seconds", "0")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].split() == ["WHAT", "WOULD", "BE", "REMOVED"]
    assert ["link", f"gc/app@{orphan}"] in [ln.split() for ln in lines]
    assert lines[-1] == "would remove 0 manifest(s), 1 link(s), 1 blob(s)"
    done = hallmark(data, "gc", "--grace-seconds", "0")
    assert ["blob", orphan] in [ln.split() for ln in done.stdout.splitlines()]
    assert done.stdout.splitlines()[-1].startswith("removed 0 manifest(s), 1 link(s), 1 blob(s); freed ")
    assert hallmark(data, "gc", "--grace-seconds", "0").stdout.startswith("nothing to collect")


@pytest.mark.skipif(not (SHARED_DATA / "osv" / "Go").is_dir(), reason="shared advisory snapshot not present")
def test_update_reports_downloads_and_loads(tmp_path: Path) -> None:
    """What the bars are drawn from: bytes per feed as they are copied, then each advisory file loaded."""
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.pipeline.advisory_sets import update

    class Recorder:
        def __init__(self) -> None:
            self.events: list[tuple[str, ...]] = []
            self.bytes: dict[str, int] = {}

        def fetching(self, path: str, total: int | None) -> None:
            self.events.append(("fetching", path, str(total)))

        def advance(self, path: str, nbytes: int) -> None:
            self.bytes[path] = self.bytes.get(path, 0) + nbytes

        def fetched(self, path: str, status: str) -> None:
            self.events.append(("fetched", path, status))

        def loading(self, files: int) -> None:
            self.events.append(("loading", str(files)))

        def loaded(self, path: str) -> None:
            self.events.append(("loaded", path))

    mirror = _mirror(tmp_path / "mirror")
    env = {**GO_ONLY, "HALLMARK_DATA_DIR": str(tmp_path / "data"), "HALLMARK_ACCESS__ENABLED": "false"}
    hm = Hallmark.open(load_config(environ=env))
    rec = Recorder()
    try:
        update(hm.pipeline, str(mirror), rec)
    finally:
        hm.close()
    size = (mirror / "osv" / "Go" / "all.zip").stat().st_size
    assert ("fetching", "osv/Go/all.zip", str(size)) in rec.events
    assert rec.bytes["osv/Go/all.zip"] == size
    assert ("fetched", "osv/Go/all.zip", "copied") in rec.events
    assert rec.events[-2:] == [("loading", "1"), ("loaded", "osv/Go/all.zip")]


def test_write_output_keeps_devices_fifos_and_links(tmp_path: Path) -> None:
    """``-o /dev/null`` (or a FIFO, or a link) is written into, never renamed over: as root, a
    rename replaced /dev/null with a regular file."""
    import stat
    import threading

    from hallmark.cli._output import write_output

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_output(str(fifo), "through the pipe")
    reader.join(10)
    assert got == [b"through the pipe\n"] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert not (tmp_path / "pipe.tmp").exists()

    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_output(str(link), "new")
    assert link.is_symlink() and target.read_text() == "new\n"

    plain = tmp_path / "out.json"
    write_output(str(plain), "{}")
    assert plain.read_text() == "{}\n" and not (tmp_path / "out.json.tmp").exists()
