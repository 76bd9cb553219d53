"""The store directly, on SQLite and PostgreSQL: a failure inside the replace leaves the previous
inventory whole, and the public queries the explore module builds on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from hallmark.inventory.parse import ContainerImage, Inventory, Workload, parse_inventory
from hallmark.inventory.store import InventoryStale, cluster_summary, ingest, list_workloads, workloads_running
from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore
from tests.conftest import PostgresServer, free_port
from tests.inventory.helpers import D, kubectl_list

HOSTS = {"registry.hallmark.test"}
T1 = dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 12, 5, 11, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'meta.db'}"
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.create_db(f"s{free_port()}")
    engine = make_engine(url, 2)
    migrate(engine)
    yield MetadataStore(engine)
    engine.dispose()


def test_a_failing_replace_leaves_the_previous_inventory_whole(meta: MetadataStore) -> None:
    ingest(meta, "prod", parse_inventory(kubectl_list()), T1, "tester", HOSTS)
    before = list_workloads(meta, "prod")
    summary = cluster_summary(meta)
    # Two workloads with one name break the unique index half-way through the inserts.
    twice = [
        Workload("shop", "Deployment", "dup", None, {}, [ContainerImage("c", "container", "x", D("1"), "spec")])
        for _ in range(2)
    ]
    with pytest.raises(IntegrityError):
        ingest(meta, "prod", Inventory(twice, [], {"Deployment": 2}, None), T2, "tester", HOSTS)
    assert list_workloads(meta, "prod") == before
    assert cluster_summary(meta) == summary


def test_stale_and_queries(meta: MetadataStore) -> None:
    ingest(meta, "prod", parse_inventory(kubectl_list()), T2, "tester", HOSTS)
    ingest(meta, "staging", parse_inventory(kubectl_list()), T1, "tester", HOSTS)
    with pytest.raises(InventoryStale):
        ingest(meta, "prod", Inventory([], [], {}, None), T1, "tester", HOSTS)

    (prod, staging) = cluster_summary(meta)
    assert (prod["name"], prod["inventory_at"], prod["workloads"], prod["exposed"]) == ("prod", T2, 7, 4)
    assert staging["inventory_at"] == T1 and staging["received_by"] == "tester"

    running = workloads_running(meta, [D("a"), D("c"), D("0")])
    assert [(r["cluster"], r["namespace"], r["kind"], r["name"], r["container"], r["digest"]) for r in running] == [
        ("prod", "shop", "Deployment", "api", "api", D("c")),
        ("prod", "shop", "Deployment", "web", "web", D("a")),
        ("staging", "shop", "Deployment", "api", "api", D("c")),
        ("staging", "shop", "Deployment", "web", "web", D("a")),
    ]
    web = running[1]
    assert web["exposed"] is True and web["exposure"][0]["host"] == "shop.example"
    assert web["digest_source"] == "status" and web["inventory_at"] == T2
    assert web["repo_name"] is None  # no such repository in this (empty) Hallmark
    assert workloads_running(meta, []) == []
