"""Filesystem blob driver: the embedded default.

Uploads are written to ``uploads/<id>`` and hashed while streaming; ``commit``
checks the digest, fsyncs and renames into ``blobs/<algo>/<aa>/<hex>`` in one
atomic step, so a killed or failed upload never leaves a visible, corrupt blob.
Identical blobs from any repository end at the same path and are stored once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, cast

import orjson

from hallmark.buffers import AlignedBuffers
from hallmark.digest import ALGORITHMS, StreamHasher, parse_digest
from hallmark.storage.base import BlobNotFound, BlobWriter, DigestMismatch, StorageUnavailable, UploadNotFound
from hallmark.storage.shared import FilesystemShared

log = logging.getLogger(__name__)
_UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_READ_CHUNK = 1 << 20
_PARALLEL_HASH_MIN = 1 << 20
_ALIGN = 4096  # O_DIRECT offsets and lengths: a multiple of any disk's logical block
_DIRECT_BUFFER = 8 << 20
_HASH_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hallmark-hash")


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux sync_file_range(2): start writeback of what was just written, without waiting.

    Flushing large uploads progressively keeps the final fsync short and avoids the
    kernel throttling the writer once too much dirty data piles up.
    """
    fn = getattr(_LIBC, "sync_file_range", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]

    def start_writeback(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE

    return start_writeback


_START_WRITEBACK = _load_sync_file_range()


def _load_syncfs() -> Callable[[int], int] | None:
    fn = getattr(_LIBC, "syncfs", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


_SYNCFS = _load_syncfs()
_SYNCFS_SLOW = 0.25
_SYNCFS_PAUSE = 60.0
_WRITEBACK_EVERY = 16 << 20


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_BOOT_ID = _boot_id()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_BUFFERS = AlignedBuffers(_DIRECT_BUFFER)


def _is_aligned(data: bytes | memoryview) -> bool:
    """A writable, contiguous buffer starting on a page boundary (usable for O_DIRECT as is)."""
    if not isinstance(data, memoryview) or data.readonly or not data.contiguous or len(data) < _ALIGN:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(data)) % _ALIGN == 0


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _writev_all(fd: int, parts: list[bytes]) -> None:
    if len(parts) == 1:
        _write_all(fd, parts[0])
        return
    total = sum(len(p) for p in parts)
    done = os.writev(fd, parts)
    if done < total:  # rare short write: finish the rest part by part
        for part in parts:
            if done >= len(part):
                done -= len(part)
                continue
            _write_all(fd, memoryview(part)[done:])
            done = 0


class FilesystemWriter:
    """One upload file. Large bodies bypass the page cache (O_DIRECT from aligned buffers).

    Why direct I/O: a buffered write copies every byte into freshly allocated page-cache
    pages, which dominated push time (most of a 1 GiB push was spent in the kernel's copy
    into new folios on a VM), and the commit's fsync then waits for the whole writeback.
    Direct writes of whole 4 KiB blocks go from one reused buffer to the disk; the
    unaligned tail of each call waits in memory (``_carry``) and is written normally at
    ``flush``/``commit``. Filesystems without O_DIRECT (tmpfs...) fall back to buffered writes.
    """

    def __init__(self, store: FilesystemBlobStore, upload_id: str, resume: bool) -> None:
        self.upload_id = upload_id
        self._store = store
        self._path = store.upload_path(upload_id)
        self._state_path = store.state_path(upload_id)
        self._hasher = StreamHasher()
        self._flushed = 0
        self._carry = b""
        if resume:
            if not self._path.exists():
                raise UploadNotFound(upload_id)
            # Another process (or a restart) wrote the first part: take its saved hash state,
            # or rebuild the running hash from the file.
            saved = self._load_state()
            if saved is not None:
                self._hasher = saved
            else:
                with open(self._path, "rb") as f:
                    while chunk := f.read(_READ_CHUNK):
                        self._hasher.update(chunk)
            self._flushed = self._hasher.size
            self._fd: int | None = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        else:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._disk = self._hasher.size  # bytes in the file; the rest of size is in _carry
        self._digest = ""

    @property
    def size(self) -> int:
        return self._hasher.size

    def _open_fd(self) -> int:
        if self._fd is None:
            raise ValueError("writer is closed")
        return self._fd

    def write(self, chunk: bytes | memoryview) -> None:
        self.write_parts([bytes(chunk)] if isinstance(chunk, memoryview) else [chunk])

    def write_parts(self, parts: list[bytes]) -> None:
        fd = self._open_fd()
        total = sum(len(p) for p in parts)
        if total >= _PARALLEL_HASH_MIN:
            # Both release the GIL: hash on a helper thread while this one writes.
            hashed = _HASH_POOL.submit(self._hash_parts, parts)
            try:
                if self._store.direct_io:
                    self._write_direct(fd, parts)
                else:
                    self._write_buffered(fd, parts)
            finally:
                hashed.result()
        else:
            self._write_buffered(fd, parts)
            self._hash_parts(parts)

    def _write_buffered(self, fd: int, parts: list[bytes]) -> None:
        if self._carry:
            parts = [self._carry, *parts]
            self._carry = b""
        _writev_all(fd, parts)
        self._disk += sum(len(p) for p in parts)
        if _START_WRITEBACK is not None and self._disk - self._flushed >= _WRITEBACK_EVERY:
            _START_WRITEBACK(fd, self._flushed, self._disk - self._flushed)
            self._flushed = self._disk

    def _write_direct(self, fd: int, parts: list[bytes]) -> None:
        if len(parts) == 1 and not self._carry and self._disk % _ALIGN == 0 and _is_aligned(parts[0]):
            # The caller's buffer is page-aligned already (a socket read into it): no copy.
            view = memoryview(parts[0])
            whole = len(view) - len(view) % _ALIGN
            if whole:
                self._direct_block(fd, view[:whole])
            self._carry = bytes(view[whole:])
            return
        pending: list[bytes | memoryview] = [self._carry, *parts] if self._carry else list(parts)
        self._carry = b""
        misaligned = self._disk % _ALIGN
        if misaligned:
            # A resumed upload ends mid-block: complete that block with a buffered write.
            head: list[bytes] = []
            need = _ALIGN - misaligned
            while need and pending:
                first = pending[0]
                take = bytes(first[:need])
                head.append(take)
                need -= len(take)
                if len(take) == len(first):
                    pending.pop(0)
                else:
                    pending[0] = memoryview(first)[len(take) :]
            _writev_all(fd, head)
            self._disk += sum(len(h) for h in head)
            if self._disk % _ALIGN:
                return  # everything fitted in the partial block
        view = _BUFFERS.take()
        try:
            filled = 0
            for part in pending:
                src = memoryview(part)
                while src:
                    n = min(len(src), _BUFFERS.size - filled)
                    view[filled : filled + n] = src[:n]
                    filled += n
                    src = src[n:]
                    if filled == _BUFFERS.size:
                        self._direct_block(fd, view[:filled])
                        filled = 0
            whole = filled - filled % _ALIGN
            if whole:
                self._direct_block(fd, view[:whole])
            self._carry = bytes(view[whole:filled])
        finally:
            _BUFFERS.give(view)

    def _direct_block(self, fd: int, data: memoryview) -> None:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
            _write_all(fd, data)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # No direct I/O here (EINVAL writes nothing): buffered from now on.
            self._store.direct_io = False
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            _write_all(fd, data)
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        self._disk += len(data)
        self._flushed = self._disk

    def _write_carry(self) -> None:
        if self._carry and self._fd is not None:
            _write_all(self._fd, self._carry)
            self._disk += len(self._carry)
            self._carry = b""

    def _hash_parts(self, parts: list[bytes]) -> None:
        for part in parts:
            self._hasher.update(part)

    def _actual_digest(self, algorithm: str) -> str:
        if self._hasher.has(algorithm):
            return self._hasher.digest(algorithm)
        h = ALGORITHMS[algorithm]()
        with open(self._path, "rb") as f:
            while chunk := f.read(_READ_CHUNK):
                h.update(chunk)
        return f"{algorithm}:{h.hexdigest()}"

    def finish(self, expected_digest: str) -> int:
        """Write what is left and check the digest; the data is not durable or visible yet."""
        algo, _ = parse_digest(expected_digest)
        self._open_fd()
        self._write_carry()
        actual = self._actual_digest(algo)
        if actual != expected_digest:
            # The partial upload stays resumable; the caller decides whether to cancel it.
            raise DigestMismatch(expected_digest, actual)
        self._digest = expected_digest
        return self._hasher.size

    def publish(self) -> Path:
        """Close and rename the finished upload into place; returns the directory to sync."""
        fd = self._open_fd()
        os.close(fd)
        self._fd = None
        target = self._store.blob_path(self._digest)
        # Identical content from another push replaces the file in place (one copy either way).
        # Always renaming, never "already there, skip", is what keeps garbage collection safe:
        # a blob being collected is renamed away first, and a concurrent push puts it back.
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, target)
        self._drop_state()
        return target.parent

    def fsync(self) -> None:
        os.fsync(self._open_fd())

    def commit(self, expected_digest: str) -> int:
        size = self.finish(expected_digest)
        self.fsync()
        _fsync_dir(self.publish())
        return size

    def flush(self) -> None:
        if self._fd is not None:
            self._write_carry()
            self._save_state()

    def _file_key(self) -> list[object]:
        st = os.stat(self._path)
        return [_BOOT_ID, st.st_ino, st.st_size, st.st_mtime_ns]

    def _save_state(self) -> None:
        """Keep the running hash beside the upload, for whichever process takes the next chunk.

        Only trusted while the file is exactly as it was (same boot, inode, size and mtime):
        after a crash the page cache that held the data is gone, so the file is re-read.
        """
        state = self._hasher.state()
        if state is None:
            return
        doc = {"file": self._file_key(), "state": state.hex()}
        tmp = self._state_path.with_name(f"{self._state_path.name}.{os.getpid()}")
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(orjson.dumps(doc))
            os.replace(tmp, self._state_path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _load_state(self) -> StreamHasher | None:
        try:
            doc = orjson.loads(self._state_path.read_bytes())
            if not _BOOT_ID or doc["file"] != self._file_key():
                return None
            hasher = StreamHasher(bytes.fromhex(doc["state"]))
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        return hasher if hasher.size == doc["file"][2] else None

    def _drop_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._state_path.unlink()

    def close(self) -> None:
        if self._fd is not None:
            try:
                self._write_carry()
            finally:
                os.close(self._fd)
                self._fd = None

    def cancel(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        self._drop_state()


class FilesystemBlobStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._uploads = self.root / "uploads"
        self._states = self.root / "upload-states"
        # Cleared by the first writer that meets a filesystem without O_DIRECT.
        self.direct_io = hasattr(os, "O_DIRECT")
        self._syncfs_paused_until = 0.0
        self._root_fd_pid = 0
        self._root_fd_value = -1
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)
        # syncfs(2) covers one filesystem: group commit needs uploads and blobs on the same one.
        self._single_fs = len({p.stat().st_dev for p in (self.root, self._blobs, self._uploads)}) == 1

    def blob_path(self, digest: str) -> Path:
        algo, hexpart = parse_digest(digest)
        return self._blobs / algo / hexpart[:2] / hexpart

    def upload_path(self, upload_id: str) -> Path:
        if not _UPLOAD_ID_RE.match(upload_id):
            raise UploadNotFound(upload_id)
        return self._uploads / upload_id

    def state_path(self, upload_id: str) -> Path:
        return self._states / upload_id

    def stat(self, digest: str) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def ping(self) -> None:
        """The blob folder is there and writable (a lost mount or a read-only remount is not ready)."""
        if not self._blobs.is_dir():
            raise StorageUnavailable(f"blob folder {self._blobs} is missing")
        if not os.access(self._blobs, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"blob folder {self._blobs} is not writable")

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def local_path(self, digest: str) -> Path | None:
        return self.blob_path(digest)

    def put(self, data: bytes | Iterable[bytes], expected_digest: str | None = None) -> tuple[str, int]:
        upload_id = uuid.uuid4().hex
        w = FilesystemWriter(self, upload_id, resume=False)
        try:
            for chunk in [data] if isinstance(data, bytes | bytearray) else data:
                w.write(chunk)
            digest = expected_digest or w._actual_digest("sha256")
            size = w.commit(digest)
        except BaseException:
            w.cancel()
            raise
        return digest, size

    def writer(self, upload_id: str, resume: bool = False) -> FilesystemWriter:
        return FilesystemWriter(self, upload_id, resume)

    def commit_many(self, items: Sequence[tuple[BlobWriter, str]]) -> list[int | Exception]:
        """Group commit: finish every upload, make all data durable, rename all, make that durable.

        Two fsyncs per blob (file, then directory) cost ~0.5 ms of CPU each on a VM and
        dominated small pushes; one ``syncfs`` for a whole batch is ~0.05 ms per blob. The
        order is the same as :meth:`FilesystemWriter.commit`: no file reaches its final
        name before its data is on disk. ``syncfs`` also flushes unrelated dirty data on
        the filesystem: when that makes it slow, this process goes back to per-file fsync
        for a while.
        """
        results: list[int | Exception] = []
        ready: dict[int, FilesystemWriter] = {}  # position in items -> finished writer
        for writer, digest in items:
            try:
                if not isinstance(writer, FilesystemWriter):
                    raise TypeError("not a filesystem upload")
                results.append(writer.finish(digest))
                ready[len(results) - 1] = writer
            except Exception as exc:
                results.append(exc)
        published = 0
        try:
            if ready and not self._syncfs():
                for w in ready.values():
                    w.fsync()
            dirs = set()
            for w in ready.values():
                dirs.add(w.publish())
                published += 1
            if ready and not self._syncfs():
                for d in dirs:
                    _fsync_dir(d)
        except Exception as exc:
            # Nothing is reported as stored unless this whole sequence succeeded.
            for w in list(ready.values())[published:]:
                with contextlib.suppress(Exception):
                    w.close()
            for i in ready:
                results[i] = exc
        return results

    def _syncfs(self) -> bool:
        """syncfs(2) on the store's filesystem; False when per-file fsync must be used instead."""
        if _SYNCFS is None or time.monotonic() < self._syncfs_paused_until or not self._single_fs:
            return False
        started = time.monotonic()
        if _SYNCFS(self._root_fd()) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
        took = time.monotonic() - started
        if took > _SYNCFS_SLOW:
            log.warning("syncfs took %.2f s (other writers on this filesystem): per-file fsync for a while", took)
            self._syncfs_paused_until = time.monotonic() + _SYNCFS_PAUSE
        return True

    def _root_fd(self) -> int:
        if self._root_fd_pid != os.getpid():
            self._root_fd_value = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._root_fd_pid = os.getpid()
        return self._root_fd_value

    def upload_size(self, upload_id: str) -> int | None:
        try:
            return self.upload_path(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def delete_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError, UploadNotFound):
            self.upload_path(upload_id).unlink()
        if _UPLOAD_ID_RE.match(upload_id):
            with contextlib.suppress(FileNotFoundError):
                self.state_path(upload_id).unlink()

    def list_uploads(self) -> Iterator[tuple[str, float]]:
        for entry in os.scandir(self._uploads):
            with contextlib.suppress(FileNotFoundError):
                yield entry.name, entry.stat().st_mtime

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    def _trash_path(self, digest: str) -> Path:
        algo, hexpart = parse_digest(digest)
        return self.root / "trash" / f"{algo}-{hexpart}"

    def trash(self, digest: str) -> bool:
        """Move a blob out of sight (first step of garbage collection); False if absent."""
        dest = self._trash_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.blob_path(digest), dest)
        except FileNotFoundError:
            return False
        return True

    def untrash(self, digest: str) -> None:
        """Undo :meth:`trash` (the blob was linked again meanwhile)."""
        target = self.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self._trash_path(digest), target)

    def purge(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._trash_path(digest).unlink()

    def shared(self) -> FilesystemShared:
        return FilesystemShared(self.root)

    def iterate(self) -> Iterator[str]:
        for algo in ALGORITHMS:
            base = self._blobs / algo
            if not base.is_dir():
                continue
            for prefix in os.scandir(base):
                if prefix.is_dir():
                    for entry in os.scandir(prefix.path):
                        yield f"{algo}:{entry.name}"
