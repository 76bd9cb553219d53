"""Fixtures shared by the inventory tests."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server
from tests.ocihelp import push_image


@pytest.fixture(scope="module")
def pushed(server: Server) -> dict[str, str]:
    """Hallmark's own repositories the fixture's images name (tags included)."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        return {
            "shop/web": push_image(c, "shop/web", "1.4"),
            "shop/web-migrate": push_image(c, "shop/web-migrate", "v7"),
            "shop/report": push_image(c, "shop/report", "nightly"),
            "platform/agent": push_image(c, "platform/agent", "3"),
            "shop/worker": push_image(c, "shop/worker", "2.0"),
        }
