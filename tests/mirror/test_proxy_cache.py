"""A proxied blob is read once after it is stored (the store wrote it with O_DIRECT, past the page
cache), so the next pulls of a proxied image start from memory, like the upstream's."""

from __future__ import annotations

from pathlib import Path

from hallmark.mirror import proxy


def test_keep_cached_reads_the_whole_blob_and_ignores_what_is_not_there(tmp_path: Path) -> None:
    blob = tmp_path / "data"
    blob.write_bytes(b"x" * (3 << 20) + b"tail")  # more than one read buffer
    assert proxy.keep_cached(blob) == (3 << 20) + 4
    # Nothing to read (object storage: no local path) or a blob gone meanwhile: nothing happens.
    assert proxy.keep_cached(None) == 0
    assert proxy.keep_cached(tmp_path / "gone") == 0
