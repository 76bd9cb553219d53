"""The blob-store interface: content-addressed, write-once, verified on the way in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from hallmark.storage.shared import SharedFiles


class BlobNotFound(KeyError):
    pass


class UploadNotFound(KeyError):
    pass


class StorageUnavailable(OSError):
    """The blob store cannot be reached or refuses service (after the driver's own retries).

    The registry answers 503 UNAVAILABLE with this message; nothing half-written becomes visible.
    """


class DigestMismatch(ValueError):
    """The content does not hash to the digest the client named; nothing was stored."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"digest mismatch: expected {expected}, content is {actual}")
        self.expected = expected
        self.actual = actual


class BlobWriter(Protocol):
    """An upload in progress. Data only becomes a visible blob on :meth:`commit`."""

    upload_id: str

    @property
    def size(self) -> int: ...

    def write(self, chunk: bytes | memoryview) -> None: ...

    def write_parts(self, parts: list[bytes]) -> None:
        """Write consecutive chunks (one call per buffered batch of a request body)."""
        ...

    def commit(self, expected_digest: str) -> int:
        """Verify the content against ``expected_digest`` and publish it; returns the size."""
        ...

    def flush(self) -> None:
        """Make written data visible to :meth:`BlobStore.upload_size` (for other replicas)."""
        ...

    def close(self) -> None:
        """Flush and release the handle; the upload can be resumed later."""
        ...

    def cancel(self) -> None:
        """Discard the partial data."""
        ...


class BlobStore(Protocol):
    def stat(self, digest: str) -> int | None:
        """Size of the blob, or None when absent."""
        ...

    def open(self, digest: str) -> BinaryIO: ...

    def local_path(self, digest: str) -> Path | None:
        """A file path for zero-copy serving (sendfile), when the driver has one."""
        ...

    def put(self, data: bytes | Iterable[bytes], expected_digest: str | None = None) -> tuple[str, int]:
        """Store content at once; returns (digest, size)."""
        ...

    def writer(self, upload_id: str, resume: bool = False) -> BlobWriter: ...

    def commit_many(self, items: Sequence[tuple[BlobWriter, str]]) -> list[int | Exception]:
        """Commit several uploads at once (group commit); per item the size or the error."""
        ...

    def upload_size(self, upload_id: str) -> int | None: ...

    def delete_upload(self, upload_id: str) -> None: ...

    def list_uploads(self) -> Iterator[tuple[str, float]]:
        """(upload_id, last modification time) of every partial upload."""
        ...

    def delete(self, digest: str) -> None: ...

    def trash(self, digest: str) -> bool:
        """Garbage collection, step 1: move the blob out of sight; False when absent."""
        ...

    def untrash(self, digest: str) -> None:
        """Put a trashed blob back (it was linked again while being collected)."""
        ...

    def purge(self, digest: str) -> None:
        """Garbage collection, last step: remove a trashed blob for good."""
        ...

    def iterate(self) -> Iterator[str]: ...

    def ping(self) -> None:
        """Raise when the store cannot be reached (a cheap call, for readiness probes)."""
        ...

    def shared(self) -> SharedFiles:
        """The reserved namespace for files every replica needs (advisory sets, rule bundles)."""
        ...
