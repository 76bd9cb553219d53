"""A populated metadata database per backend (SQLite and a real PostgreSQL) for the explore tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore
from tests.conftest import free_port
from tests.explore.graph import build


def open_meta(request: pytest.FixtureRequest, backend: str, folder: Path) -> MetadataStore:
    if backend == "postgres":
        url = request.getfixturevalue("postgres").create_db(f"explore{free_port()}")
    else:
        url = f"sqlite:///{folder / 'meta.db'}"
    engine = make_engine(url, 4)
    migrate(engine)
    return MetadataStore(engine)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def graph(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetadataStore]:
    """The graph of tests/explore/graph.py, read-only for the tests that use it."""
    meta = open_meta(request, str(request.param), tmp_path_factory.mktemp("explore"))
    build(meta)
    yield meta
    meta.engine.dispose()


@pytest.fixture
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    """An empty SQLite database of one test (for the tests that change rows)."""
    meta = open_meta(request, "sqlite", tmp_path)
    yield meta
    meta.engine.dispose()
