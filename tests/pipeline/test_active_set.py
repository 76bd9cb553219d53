"""The scan's SQLite read of the active advisory set answers exactly as the metadata store does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore
from hallmark.pipeline.active_set import read_active_set, sqlite_path
from hallmark.pipeline.store import PipelineStore


def test_sqlite_read_matches_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hallmark.db'}"
    engine = make_engine(url)
    migrate(engine)
    store = PipelineStore(MetadataStore(engine))
    try:
        assert read_active_set(url) is None and store.active_advisory_set() is None
        store.add_advisory_set("sha256:" + "a" * 64, {"folder": "one", "counts": {"osv:PyPI": 3}})
        second = store.add_advisory_set("sha256:" + "b" * 64, {"folder": "two", "imported_at": "2026-12-06"})
        expected = store.active_advisory_set()
        assert expected is not None and expected["id"] == second
        assert read_active_set(url) == expected  # same id, digest, parsed sources and datetime
    finally:
        engine.dispose()


def test_a_missing_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "none" / "hallmark.db"
    with pytest.raises(sqlite3.OperationalError):
        read_active_set(f"sqlite:///{missing}")
    assert not missing.exists() and not missing.parent.exists()


def test_only_sqlite_files_take_the_short_way() -> None:
    assert sqlite_path("sqlite:////srv/h/hallmark.db") == Path("/srv/h/hallmark.db")
    assert sqlite_path("sqlite:///rel/h.db?timeout=5") == Path("rel/h.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://u@db/hallmark") is None
