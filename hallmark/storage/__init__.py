"""Blob storage behind a small interface, like the CNCF distribution storage drivers.

Handlers and services only see :class:`BlobStore`; the filesystem driver is the
embedded default, and an S3-compatible driver can implement the same methods.
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
