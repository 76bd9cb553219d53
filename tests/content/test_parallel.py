"""Content checks in worker processes (``hallmark.content.parallel``) find exactly what one
process finds: the EICAR file, planted secrets, archive members, mode checks, read errors and
files too large to hold, in the same order; a worker that dies loses no file."""

from __future__ import annotations

import gc
import io
import multiprocessing
import os
import signal
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from hallmark.content import ContentScanner, RuleBundle, ScanOptions, ScanOutcome, load_rules
from hallmark.content.parallel import HOLD_BYTES, MiB, OrderedChecks, ScanPool, Slot, WorkerLost
from tests.content.conftest import FakeSecrets, eicar


def _jar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, data)
    return buf.getvalue()


def _files(fake: FakeSecrets) -> list[tuple[str, bytes, int]]:
    creds = f"[default]\naws_access_key_id = {fake.aws_key_id}\naws_secret_access_key = {fake.aws_secret}\n"
    return [
        ("/tmp/eicar.com", eicar(), 0o644),
        ("/root/.aws/credentials", creds.encode(), 0o600),
        ("/usr/bin/tool", b"\x7fELF" + b"\0" * 200, 0o4755),
        ("/opt/app/lib.jar", _jar("conf/app.env", f"DB=postgres://app:{fake.db_password}@db:5432/x\n".encode()), 0o644),
        ("/srv/readme.txt", b"nothing here\n" * 50, 0o644),
        ("/srv/big.txt", (f"aws_secret_access_key = {fake.aws_secret}\n" + "x" * 5000).encode(), 0o644),
    ]


@pytest.fixture(autouse=True)
def _collect_here() -> Iterator[None]:
    """Garbage from a test (yara-x scanners in reference cycles) is collected on this thread:
    a yara-x scanner dropped on a pool thread of a later test raises an unraisable error."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def bundle() -> RuleBundle:
    return load_rules(None)  # built-in rules: the EICAR YARA rule and Hallmark's secret rules


def _one_process(bundle: RuleBundle, options: ScanOptions, files: list[tuple[str, bytes, int]]) -> ScanOutcome:
    scanner = ContentScanner(bundle, options)
    out = ScanOutcome()
    for path, data, mode in files:
        out.extend(scanner.scan_file(path, 0, "sha256:layer", io.BytesIO(data), len(data), mode=mode))
    return out


def _ordered(
    bundle: RuleBundle, options: ScanOptions, files: list[tuple[str, bytes, int]], workers: int
) -> ScanOutcome:
    """The files checked through ``OrderedChecks``; with workers, none is checked in this process."""
    light = ContentScanner(load_rules(None, yara=False), options)
    made_here: list[int] = []

    def make() -> ContentScanner:
        made_here.append(os.getpid())  # a worker's append stays in the worker
        return ContentScanner(bundle, options)

    checks = OrderedChecks(make, light, workers)
    slots: list[Slot] = []
    try:
        for path, data, mode in files:
            checks.file(slots, path, 0, "sha256:layer", io.BytesIO(data), len(data), mode)
        outcome = checks.outcome(slots)
    finally:
        checks.close()
    assert made_here == ([] if workers else [os.getpid()])
    return outcome


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_workers_find_what_one_process_finds(bundle: RuleBundle, fake: FakeSecrets, workers: int) -> None:
    options = ScanOptions()
    files = _files(fake) * 3  # more files than workers, spread over both
    expected = _one_process(bundle, options, files)
    got = _ordered(bundle, options, files, workers)
    assert got == expected
    found = {(f.kind, f.rule_id, f.path) for f in got.findings}
    assert ("malware", "Hallmark_EICAR_Test_File", "/tmp/eicar.com") in found
    assert any(k == "secret" and p == "/root/.aws/credentials" for k, _, p in found)
    assert any(k == "secret" and p == "/opt/app/lib.jar!/conf/app.env" for k, _, p in found)
    assert ("config", "setuid-file", "/usr/bin/tool") in found


def test_files_over_the_memory_limit_stay_here_with_the_same_result(bundle: RuleBundle, fake: FakeSecrets) -> None:
    options = ScanOptions(max_file_bytes=1024)  # /srv/big.txt and the credentials-sized files differ
    files = _files(fake)
    assert _ordered(bundle, options, files, 2) == _one_process(bundle, options, files)
    assert any(
        s.reason == "too-large" and s.path == "/srv/big.txt" for s in _ordered(bundle, options, files, 1).skipped
    )


class _Broken(io.RawIOBase, BinaryIO):  # a raw binary stream, typed like io.FileIO
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        raise OSError("unexpected end of data")


def test_a_read_error_gives_the_same_skip(bundle: RuleBundle) -> None:
    options = ScanOptions()
    alone = ContentScanner(bundle, options).scan_file("/x", 0, "sha256:layer", _Broken(), 10, mode=0o644)
    checks = OrderedChecks(lambda: ContentScanner(bundle, options), ContentScanner(bundle, options), 1)
    try:
        slots: list[Slot] = []
        checks.file(slots, "/x", 0, "sha256:layer", _Broken(), 10, 0o644)
        assert checks.outcome(slots) == alone
    finally:
        checks.close()
    assert [s.reason for s in alone.skipped] == ["read-error"]


def test_files_of_a_worker_that_dies_are_checked_here(bundle: RuleBundle, fake: FakeSecrets, tmp_path: Path) -> None:
    options = ScanOptions()
    parent = os.getpid()

    made_here: list[int] = []

    def make() -> ContentScanner:
        if os.getpid() != parent:
            os._exit(3)  # the worker dies before checking anything
        made_here.append(parent)
        return ContentScanner(bundle, options)

    files = _files(fake)
    with ScanPool(make, 2) as pool:
        tickets = [pool.submit(p, 0, "sha256:layer", d, len(d), mode=m) for p, d, m in files]
        got = ScanOutcome()
        for t in tickets:
            got.extend(pool.result(t))
    assert got == _one_process(bundle, options, files)
    assert any(f.rule_id == "Hallmark_EICAR_Test_File" for f in got.findings)
    assert made_here and set(made_here) == {parent}  # checked here, once the workers were gone


def test_path_skipped_is_the_same_as_asking_each_pattern(data_dir: Path) -> None:
    """The allowlisted paths, asked as one RE2 alternation, are those each pattern gives."""
    ruleset = load_rules(data_dir, yara=False).secrets
    paths = [
        "/usr/share/doc/pkg/copyright",
        "/usr/lib/python3/dist-packages/x/tests/key.pem",
        "/usr/local/go/src/crypto/tls/testdata/key.pem",
        "/root/go/pkg/mod/example.com/a@v1/k.pem",
        "/etc/ssl/certs/ca.pem",
        "/app/.env",
        "/app/config/settings.py",
        "/srv/package-lock.json",
        "/home/u/.m2/repository/x.jar",
        "/opt/app/node_modules/x/README.md",
    ]
    naive = [
        any(p.search(path) for p in ruleset.path_allowlist)
        or any(a.paths and not a.condition_and and a.path_matches(path) for a in ruleset.global_allowlists)
        for path in paths
    ]
    assert [ruleset.path_skipped(p) for p in paths] == naive
    assert True in naive and False in naive


class _Dies(ContentScanner):
    def scan_file(self, *args: object, **kwargs: object) -> ScanOutcome:
        os._exit(3)  # a crash in the middle of a check


def test_a_worker_that_dies_holding_a_big_file_is_an_error_not_a_gap(bundle: RuleBundle, fake: FakeSecrets) -> None:
    options = ScanOptions()
    parent = os.getpid()

    def make() -> ContentScanner:
        return ContentScanner(bundle, options) if os.getpid() == parent else _Dies(bundle, options)

    big = b"x" * (HOLD_BYTES + 1)  # not kept here once sent
    small = eicar()
    with ScanPool(make, 1) as pool:
        first = pool.submit("/srv/big.bin", 0, "sha256:layer", big, len(big), mode=0o644)
        second = pool.submit("/tmp/eicar.com", 0, "sha256:layer", small, len(small), mode=0o644)
        with pytest.raises(WorkerLost, match=r"/srv/big\.bin"):
            pool.result(first)
        assert pool.result(second) == _one_process(bundle, options, [("/tmp/eicar.com", small, 0o644)])


class _BreaksAfter(io.RawIOBase, BinaryIO):  # a raw binary stream, typed like io.FileIO
    """A layer stream that gives ``data`` and then fails."""

    def __init__(self, data: bytes) -> None:
        self.left = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self.left:
            raise OSError("unexpected end of data")
        n = min(len(buffer), len(self.left))
        buffer[:n] = self.left[:n]
        self.left = self.left[n:]
        return n


def test_big_files_go_in_chunks_with_the_same_result(bundle: RuleBundle, fake: FakeSecrets) -> None:
    """Files over HOLD_BYTES are sent as they are read (not held whole here): same findings,
    and a layer stream that fails part-way gives the same skip as a reading scan_file."""
    options = ScanOptions()
    big = b"filler line\n" * ((HOLD_BYTES + MiB) // 12) + f"aws_secret_access_key = {fake.aws_secret}\n".encode()
    alone = ContentScanner(bundle, options)
    expected = ScanOutcome()
    expected.extend(alone.scan_file("/srv/big.txt", 0, "sha256:layer", io.BytesIO(big), len(big), mode=0o644))
    expected.extend(
        alone.scan_file("/srv/cut.txt", 0, "sha256:layer", _BreaksAfter(big[: 2 * MiB]), len(big), mode=0o644)
    )
    assert any(f.kind == "secret" for f in expected.findings)
    assert any(s.reason == "read-error" for s in expected.skipped)
    checks = OrderedChecks(lambda: ContentScanner(bundle, options), ContentScanner(bundle, options), 2)
    try:
        slots: list[Slot] = []
        checks.file(slots, "/srv/big.txt", 0, "sha256:layer", io.BytesIO(big), len(big), 0o644)
        checks.file(
            slots, "/srv/cut.txt", 0, "sha256:layer", io.BufferedReader(_BreaksAfter(big[: 2 * MiB])), len(big), 0o644
        )
        assert all(isinstance(s, int) for s in slots)  # both went to a worker
        assert checks.outcome(slots) == expected
    finally:
        checks.close()


def test_workers_ignore_ctrl_c(bundle: RuleBundle, fake: FakeSecrets) -> None:
    """Ctrl-C goes to the whole process group; the scanning process stops the workers."""
    options = ScanOptions()
    files = _files(fake)
    with ScanPool(lambda: ContentScanner(bundle, options), 2) as pool:
        got = ScanOutcome()
        for p, d, m in files[:2]:  # one file each: both workers are up and running
            got.extend(pool.result(pool.submit(p, 0, "sha256:layer", d, len(d), mode=m)))
        children = multiprocessing.active_children()
        assert len(children) >= 2
        for child in children:
            assert child.pid is not None
            os.kill(child.pid, signal.SIGINT)
        tickets = [pool.submit(p, 0, "sha256:layer", d, len(d), mode=m) for p, d, m in files[2:]]
        for t in tickets:
            got.extend(pool.result(t))
        assert all(child.is_alive() for child in children)
    assert got == _one_process(bundle, options, files)


def test_streams_longer_or_shorter_than_announced_are_read_as_one_process_reads_them(
    bundle: RuleBundle, fake: FakeSecrets
) -> None:
    options = ScanOptions()
    secret = f"aws_secret_access_key = {fake.aws_secret}\n".encode()
    cases = [
        ("/srv/longer.txt", b"x" * 1000 + secret, 1000),  # the secret is past the announced size
        ("/srv/shorter.txt", secret, len(secret) + 500),  # the stream ends early
        ("/srv/much-longer.txt", b"y" * 100 + b"z" * HOLD_BYTES + secret, 100),  # then over HOLD_BYTES
    ]
    alone = ContentScanner(bundle, options)
    expected = ScanOutcome()
    for path, data, size in cases:
        expected.extend(alone.scan_file(path, 0, "sha256:layer", io.BytesIO(data), size, mode=0o644))
    assert sum(f.kind == "secret" for f in expected.findings) == 3
    checks = OrderedChecks(lambda: ContentScanner(bundle, options), ContentScanner(bundle, options), 1)
    try:
        slots: list[Slot] = []
        for path, data, size in cases:
            checks.file(slots, path, 0, "sha256:layer", io.BufferedReader(io.BytesIO(data)), size, 0o644)
        assert all(isinstance(s, int) for s in slots)
        assert checks.outcome(slots) == expected
    finally:
        checks.close()


def test_more_files_than_the_ring_holds_wait_for_room_and_keep_their_bytes(
    bundle: RuleBundle, fake: FakeSecrets
) -> None:
    """A third more than the ring holds, in small files with a finding each: the reader
    waits for the worker to free room, and no file is checked against another file's bytes."""
    options = ScanOptions()
    secret = f"aws_secret_access_key = {fake.aws_secret}\n"
    files = [(f"/srv/{i}.env", ("#" * 300_000 + "\n" * (i + 1) + secret).encode(), 0o644) for i in range(40)]
    files[33] = ("/tmp/eicar.com", eicar(), 0o644)
    assert sum(len(d) for _, d, _ in files) > 8 * MiB * 1.3  # the ring: 8 MiB
    got = _ordered(bundle, options, files, 1)
    assert got == _one_process(bundle, options, files)
    lines = {f.path: f.line for f in got.findings if f.kind == "secret"}
    assert len(lines) == 39 and all(lines[f"/srv/{i}.env"] == i + 2 for i in range(40) if i != 33)
    assert any(f.path == "/tmp/eicar.com" and f.kind == "malware" for f in got.findings)
