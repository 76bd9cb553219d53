"""Blob storage behind a small interface, like the CNCF distribution storage drivers.

Handlers and services only see :class:`BlobStore`; the filesystem driver is the
embedded default, :mod:`hallmark.storage.s3` keeps blobs in an S3-compatible bucket
(imported only when configured: ``hallmark.app.open_blob_store``).
"""

from hallmark.storage.base import (
    BlobNotFound,
    BlobStore,
    BlobWriter,
    DigestMismatch,
    StorageUnavailable,
    UploadNotFound,
)
from hallmark.storage.filesystem import FilesystemBlobStore

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobWriter",
    "DigestMismatch",
    "FilesystemBlobStore",
    "StorageUnavailable",
    "UploadNotFound",
]
