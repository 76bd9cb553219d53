"""Hostile or odd files: skipped with a recorded reason, never a crash, never an unbounded read."""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO

from hallmark.content import ContentScanner, RuleBundle, ScanOptions

from .conftest import FakeSecrets, eicar

MiB = 1024 * 1024


class EndlessReader(io.RawIOBase, BinaryIO):  # a raw binary stream, typed like io.FileIO
    """A reader that never ends (a lying tar header or a broken walker); counts what is read."""

    def __init__(self, byte: bytes = b"A") -> None:
        self.byte = byte
        self.served = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        assert n is not None and n > 0, "unbounded read requested"
        self.served += n
        return self.byte * n


class FailingReader(io.RawIOBase, BinaryIO):
    def __init__(self, after: int) -> None:
        self.after = after

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.after <= 0:
            raise OSError("I/O error reading layer")
        chunk = b"x" * min(n, self.after)
        self.after -= len(chunk)
        return chunk


def test_endless_stream_stops_at_the_hash_limit(rules: RuleBundle) -> None:
    opts = ScanOptions(max_file_bytes=1 * MiB, max_secret_bytes=MiB // 2, max_hash_bytes=4 * MiB, read_chunk=256 * 1024)
    reader = EndlessReader()
    out = ContentScanner(rules, opts).scan_file("dev/zero-ish", 0, "d", reader, None)
    assert reader.served <= 4 * MiB + 256 * 1024
    assert out.findings == []
    assert [(k.scanner, k.reason) for k in out.skipped] == [("all", "too-large")]


def test_declared_huge_file_is_not_read(rules: RuleBundle) -> None:
    reader = EndlessReader()
    opts = ScanOptions(max_hash_bytes=8 * MiB)
    out = ContentScanner(rules, opts).scan_file("var/big.img", 0, "d", reader, 100 * 1024 * MiB)
    assert reader.served == 0
    assert [(k.scanner, k.reason) for k in out.skipped] == [("all", "too-large")]


def test_large_file_is_hashed_but_not_held(rules: RuleBundle) -> None:
    data = b"B" * (3 * MiB)
    opts = ScanOptions(max_file_bytes=1 * MiB)
    bad = hashlib.sha256(data).hexdigest()
    rules_with_block = RuleBundle(rules.secrets, rules.yara, {bad: "big-bad"}, rules.digest)
    out = ContentScanner(rules_with_block, opts).scan_file("opt/blob", 0, "d", io.BytesIO(data), len(data))
    assert [f.engine for f in out.findings] == ["sha256-blocklist"]  # hashed in full, streaming
    assert [(k.scanner, k.reason) for k in out.skipped] == [("malware+secret", "too-large")]


def test_read_error_is_recorded(scanner: ContentScanner) -> None:
    out = scanner.scan_file("app/flaky", 0, "d", FailingReader(after=3 * MiB), 10 * MiB)
    assert out.findings == []
    assert [(k.reason, k.detail) for k in out.skipped] == [("read-error", "OSError: I/O error reading layer")]


def test_text_too_large_for_secret_scan_still_gets_malware_scan(rules: RuleBundle, fake: FakeSecrets) -> None:
    opts = ScanOptions(max_secret_bytes=64 * 1024)
    text = (f"TOKEN={fake.github}\n" + "filler line\n" * 10_000).encode()
    out = ContentScanner(rules, opts).scan_file("app/huge.log", 0, "d", text)
    assert out.findings == []
    assert [(k.scanner, k.reason) for k in out.skipped] == [("secret", "too-large")]


def test_binary_file_is_skipped_for_secrets_with_reason(scanner: ContentScanner, fake: FakeSecrets) -> None:
    data = b"\x7fELF\x02\x01\x01\x00" + f"TOKEN={fake.github}".encode() + b"\x00" * 64
    out = scanner.scan_file("usr/bin/tool", 0, "d", data)
    assert out.findings == []
    assert [(k.scanner, k.reason) for k in out.skipped] == [("secret", "binary")]
    quiet = ContentScanner(scanner.rules, ScanOptions(record_binary_skips=False))
    assert quiet.scan_file("usr/bin/tool", 0, "d", data).skipped == []


def test_invalid_utf8_is_scanned_with_replacement(scanner: ContentScanner, fake: FakeSecrets) -> None:
    data = b"caf\xe9 = latin-1 text \xff\xfe\n" + f"GITHUB_TOKEN={fake.github}\n".encode()
    out = scanner.scan_file("etc/app.conf", 0, "d", data)
    assert [(f.rule_id, f.line) for f in out.findings] == [("github-pat", 2)]
    assert [(k.reason, k.scanned) for k in out.skipped] == [("invalid-utf8", True)]


def test_empty_and_odd_paths(scanner: ContentScanner) -> None:
    for path in ("", ".", "./", "//x//y", "../../etc/passwd", "a/\udcff/b", "x" * 5000):
        out = scanner.scan_file(path, None, None, b"")
        assert out.findings == [] and out.skipped == []
    assert scanner.scan_file("./etc/x", 0, "d", eicar()).findings[0].path == "/etc/x"
    assert scanner.scan_file("../../etc/x", 0, "d", eicar()).findings[0].path == "/etc/x"


def test_random_bytes_and_truncated_archives(scanner: ContentScanner) -> None:
    import random

    rng = random.Random(7)
    for _ in range(20):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 4096)))
        scanner.scan_file("r.bin", 0, "d", blob)
        scanner.scan_file("r.zip", 0, "d", b"PK\x03\x04" + blob)
        scanner.scan_file("r.txt", 0, "d", blob.replace(b"\0", b" "))


def test_oversized_bytes_argument_is_skipped(rules: RuleBundle) -> None:
    out = ContentScanner(rules, ScanOptions(max_hash_bytes=1024)).scan_file("big", 0, "d", b"x" * 2048)
    assert [(k.scanner, k.reason) for k in out.skipped] == [("all", "too-large")]


def test_non_utf8_names_are_escaped_not_collapsed() -> None:
    from hallmark.content.scanner import normalize_path

    latin1 = normalize_path("srv/caf\udce9.txt")  # b"caf\xe9" kept by surrogateescape
    assert latin1 == "/srv/caf\\xe9.txt"
    assert normalize_path("srv/caf\udce8.txt") != latin1
    latin1.encode("utf-8")  # JSON-safe
