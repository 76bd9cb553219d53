"""tokens.prune: tokens (portal and OIDC sessions are tokens) long expired or revoked are deleted, audited;
live ones and recently dead ones stay."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

import hallmark.lifecycle.jobs  # noqa: F401 - registers the periodic jobs
from hallmark.access.service import AccessService
from hallmark.access.store import utcnow
from hallmark.access.tables import tokens
from hallmark.config import load_config
from hallmark.lifecycle.scheduler import JOBS
from tests.access.conftest import access_service


@pytest.fixture
def access(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AccessService]:
    yield from access_service(backend, tmp_path, request, {"HALLMARK_ACCESS__TOKEN_PRUNE_AFTER_DAYS": "30"})


def test_dead_tokens_are_pruned_live_ones_stay(access: AccessService) -> None:
    access.add_user("admin", "dora", "dora-Secret-123")
    now = utcnow()
    access.create_token("admin", "dora", "live", None, 90)
    access.create_token("admin", "dora", "forever", None, None)
    for name, field, days_ago in (
        ("expired-long-ago", "expires_at", 45),
        ("expired-lately", "expires_at", 3),
        ("revoked-long-ago", "revoked_at", 31),
        ("revoked-lately", "revoked_at", 1),
    ):
        tid = access.create_token("admin", "dora", name, None, 90)[0]
        with access.store.engine.begin() as conn:
            conn.execute(update(tokens).where(tokens.c.id == tid).values({field: now - dt.timedelta(days=days_ago)}))

    job = JOBS["tokens.prune"]
    assert job.interval(access.config) == 24 * 3600
    ctx = SimpleNamespace(config=access.config, meta=SimpleNamespace(engine=access.store.engine), access=access)
    assert job.run(ctx) == {"deleted": 2}

    with access.store.engine.connect() as conn:
        left = set(conn.execute(select(tokens.c.name)).scalars())
    assert left == {"live", "forever", "expired-lately", "revoked-lately"}
    entries = access.audit.query(action="token.prune")
    assert len(entries) == 1 and entries[0]["detail"]["deleted"] == 2 and entries[0]["actor"] == "system"
    assert job.run(ctx) == {"deleted": 0}
    assert len(access.audit.query(action="token.prune")) == 1  # nothing deleted, nothing to audit


def test_zero_keeps_every_token(tmp_path: Path) -> None:
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path), "HALLMARK_ACCESS__TOKEN_PRUNE_AFTER_DAYS": "0"})
    assert JOBS["tokens.prune"].interval(cfg) is None
