"""The boto3 client behind the S3 driver: built once per store, failures turned into clear errors.

Every call but a "not found" that fails after boto3's standard retries (throttling, 5xx,
timeouts, refused connections) becomes :class:`~hallmark.storage.base.StorageUnavailable`
with a message naming the bucket and the cause, never the credentials; the registry answers
it with 503 UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from hallmark.storage.base import StorageUnavailable

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


def is_missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND


def unavailable(exc: Exception, bucket: str) -> StorageUnavailable:
    """A clear message for what boto3 could not get done after its retries (never the credentials)."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "?"))
        hint = {
            "NoSuchBucket": "the bucket does not exist",
            "AccessDenied": "access denied: check storage.access_key/secret_key or the role",
            "InvalidAccessKeyId": "the access key is not known to the S3 server",
            "SignatureDoesNotMatch": "the secret key does not match the access key",
            "SlowDown": "the S3 server is throttling requests",
            "403": "access denied: check storage.access_key/secret_key or the role",
        }.get(code, str(err.get("Message") or code))
        return StorageUnavailable(f"S3 bucket {bucket!r}: {code}: {hint}")
    return StorageUnavailable(f"S3 bucket {bucket!r} unreachable: {type(exc).__name__}: {exc}")


class GuardedClient:
    """The boto3 client, with every failure but "not found" turned into :class:`StorageUnavailable`."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.raw = client
        self._bucket = bucket

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.raw, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = attr(*args, **kwargs)
            except ClientError as exc:
                if is_missing(exc):
                    raise
                raise unavailable(exc, self._bucket) from exc
            except BotoCoreError as exc:
                raise unavailable(exc, self._bucket) from exc
            if name == "get_paginator":
                return _GuardedPaginator(result, self._bucket)
            return result

        return call


class _GuardedPaginator:
    def __init__(self, paginator: Any, bucket: str) -> None:
        self._p = paginator
        self._bucket = bucket

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        try:
            yield from self._p.paginate(**kwargs)
        except ClientError as exc:
            if is_missing(exc):
                raise
            raise unavailable(exc, self._bucket) from exc
        except BotoCoreError as exc:
            raise unavailable(exc, self._bucket) from exc


def make_client(
    bucket: str,
    endpoint: str | None,
    region: str | None,
    path_style: bool,
    access_key: str | None,
    secret_key: str | None,
    max_attempts: int = 5,
    timeout: float = 60,
) -> GuardedClient:
    """Explicit keys when configured; otherwise boto3's chain (environment, ~/.aws, instance/pod role).

    Retries: botocore's "standard" mode (throttling codes such as SlowDown, 5xx, timeouts and dropped
    connections; exponential backoff with jitter, bounded by ``max_attempts`` tries in all). The
    "adaptive" mode adds a client-side rate limiter per client, which AWS documents as experimental.
    """
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region or "us-east-1"
    )
    raw = session.client(
        "s3",
        endpoint_url=endpoint,
        config=BotoConfig(
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=min(10, timeout),
            read_timeout=timeout,
            max_pool_connections=32,
            signature_version="s3v4",
        ),
    )
    return GuardedClient(raw, bucket)
