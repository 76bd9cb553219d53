"""Upload session ids that carry their own proof: ``POST /blobs/uploads/`` costs no I/O.

Most pushes open a session and close it with one ``PUT`` (skopeo, the docker client for
small blobs, oras). Writing a session row and an empty file for every ``POST`` cost a
database transaction and a thread hop per blob, as much as the upload itself. Instead the
id holds a random part, its creation time and an HMAC over both and the repository name:
the server can recognise its own ids (and their repository and age) without storing
anything. A session gets a row only once data is written to it (``PATCH``), and a closed
or cancelled one gets a tombstone row, so a finished id is never accepted again.

The key is an instance secret in the database (``hallmark.metadata.secrets``), so every
replica recognises every other's ids; an installation from before imports its old
``registry/upload-session-key`` file once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from sqlalchemy import Engine

from hallmark.metadata import secrets as instance_secrets
from hallmark.metadata.store import MetadataStore

_RANDOM = 15
_STAMP = 6
_MAC = 12
_ID_LEN = (_RANDOM + _STAMP + _MAC) * 4 // 3  # base64url without padding: 44 characters


def load_key(meta: MetadataStore | Engine, legacy_file: Path | None = None) -> bytes:
    """The installation's session key, created by the first process to ask (concurrent creators agree on one)."""
    text = instance_secrets.get_or_create(
        meta,
        instance_secrets.UPLOAD_SESSION_KEY,
        lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        legacy_file,
    )
    key = base64.urlsafe_b64decode(text.strip())
    if len(key) < 32:
        raise ValueError("the upload session key is too short")
    return key


class UploadIds:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)

    def _mac(self, raw: bytes, repo: str) -> bytes:
        return hmac.new(self._key, raw + repo.encode(), hashlib.sha256).digest()[:_MAC]

    def new(self, repo: str, now: float | None = None) -> str:
        stamp = int(now if now is not None else time.time()).to_bytes(_STAMP, "big")
        raw = secrets.token_bytes(_RANDOM) + stamp
        return base64.urlsafe_b64encode(raw + self._mac(raw, repo)).decode()

    def created(self, upload_id: str, repo: str) -> float | None:
        """When this server issued ``upload_id`` for ``repo``; None if it did not."""
        if len(upload_id) != _ID_LEN:
            return None
        try:
            blob = base64.urlsafe_b64decode(upload_id)
        except ValueError:
            return None
        raw, mac = blob[: _RANDOM + _STAMP], blob[_RANDOM + _STAMP :]
        if not hmac.compare_digest(mac, self._mac(raw, repo)):
            return None
        return float(int.from_bytes(raw[_RANDOM:], "big"))
