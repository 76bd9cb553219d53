"""Process logging: human-readable text or one JSON object per line, and the current request id.

The request id lives in a context variable so that everything done while handling one request,
log lines and audit entries (:mod:`hallmark.access.audit`), can name it without passing it
through every call. The web layer (:mod:`hallmark.web.observe`) sets it; nothing here imports
aiohttp, so domain packages may read it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from contextvars import ContextVar
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("hallmark_request_id", default=None)

# An incoming X-Request-Id is kept only when it is short and plain (letters, digits, - _ . : /),
# so a client cannot inject log lines, JSON or markup through it.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")

# Fields of a record that the JSON formatter copies when a log call passes them in ``extra``.
ACCESS_FIELDS = ("method", "route", "path", "status", "duration_ms", "bytes_in", "bytes_out", "client")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def well_formed_request_id(value: str | None) -> bool:
    return value is not None and bool(_REQUEST_ID_RE.match(value))


def current_request_id() -> str | None:
    return REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id (+ access fields, exc)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            doc["request_id"] = request_id
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup(log_format: str = "text", level: int = logging.INFO, access_log: bool = True) -> None:
    """Configure the root logger once per process (``hallmark serve``/``worker``), replacing handlers.

    Without ``access_log`` the per-request lines (logger ``hallmark.access``) are dropped before they are
    formatted (tens of microseconds per request on the hottest paths); request metrics are kept."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("hallmark.access").setLevel(logging.NOTSET if access_log else logging.WARNING)
