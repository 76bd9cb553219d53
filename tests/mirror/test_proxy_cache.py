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


def test_stored_blobs_are_cached_only_once_no_cold_blob_is_being_fetched(tmp_path: Path) -> None:
    """Reading a blob back while the same pull fetches its other layers made the cold pull slower
    (docs/performance.md): the read waits until no fetch has run for ``CACHE_QUIET_SECONDS``."""
    import asyncio
    import time
    from types import SimpleNamespace
    from typing import Any

    from hallmark.config import MirrorConfig

    read: list[tuple[str, float]] = []
    paths = {d: tmp_path / d for d in ("a", "b")}
    for p in paths.values():
        p.write_bytes(b"x" * 10)

    async def run(fn: Any, *args: Any) -> Any:
        result = fn(*args)
        if fn is proxy.keep_cached:
            read.append((args[0].name, time.monotonic()))
        return result

    svc = SimpleNamespace(run=run, blobs=SimpleNamespace(local_path=lambda d: paths[d]))

    async def scenario() -> float:
        cache = proxy.PullThrough(MirrorConfig(), svc)  # type: ignore[arg-type]
        fetching: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        cache._inflight["sha256:other"] = fetching  # another layer of the same pull is still coming
        cache._cache_later("a")
        cache._cache_later("b")
        await asyncio.sleep(proxy.CACHE_QUIET_SECONDS * 3)
        assert read == []  # nothing read back while a fetch runs
        del cache._inflight["sha256:other"]
        cache._last_fetch = done_at = time.monotonic()
        while len(read) < 2:
            await asyncio.sleep(0.01)
        await cache.close()
        return done_at

    done_at = asyncio.run(scenario())
    assert [name for name, _ in read] == ["a", "b"]
    assert all(at - done_at >= proxy.CACHE_QUIET_SECONDS for _, at in read)
