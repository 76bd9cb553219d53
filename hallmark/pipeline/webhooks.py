"""Webhook notifications: JSON body, ``X-Hallmark-Signature: sha256=<HMAC>`` header, retries with backoff."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from typing import Any

import httpx
import orjson

from hallmark.config import Config

log = logging.getLogger(__name__)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    config: Config, event: str, payload: dict[str, Any], attempts: int = 4, backoff: float = 0.5
) -> dict[str, bool]:
    """POST the event to every configured webhook; returns url -> delivered."""
    results: dict[str, bool] = {}
    if not config.advisories.webhooks:
        return results
    body = orjson.dumps({"event": event, "id": str(uuid.uuid4()), "payload": payload})
    headers = {"Content-Type": "application/json", "X-Hallmark-Event": event}
    if config.advisories.webhook_secret:
        headers["X-Hallmark-Signature"] = sign(config.advisories.webhook_secret, body)
    with httpx.Client(timeout=10) as client:
        for url in config.advisories.webhooks:
            ok = False
            for attempt in range(attempts):
                try:
                    resp = client.post(url, content=body, headers=headers)
                    if resp.status_code < 300:
                        ok = True
                        break
                    if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                        break  # the receiver rejects it; retrying will not help
                except httpx.HTTPError as exc:
                    log.warning("webhook %s attempt %d failed: %s", url, attempt + 1, type(exc).__name__)
                time.sleep(backoff * 2**attempt)
            results[url] = ok
            if not ok:
                log.warning("webhook %s: giving up on %s", url, event)
    return results
