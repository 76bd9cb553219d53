"""Instance secrets in the database: concurrent first starts agree on one value, old key files are imported."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from hallmark.access.ratelimit import DatabaseCounters, RateLimiter
from hallmark.metadata import secrets as instance_secrets
from hallmark.metadata.db import make_engine, migrate
from tests.conftest import PostgresServer, free_port


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.create_db(f"s{free_port()}")
    else:
        url = f"sqlite:///{tmp_path / 'hallmark.db'}"
    eng = make_engine(url, 8)
    migrate(eng)
    yield eng
    eng.dispose()


def test_concurrent_creators_agree_on_one_value(engine: Engine) -> None:
    """Eight "replicas" starting at once each propose their own value; all end up with the same one."""
    got: list[str] = []
    start = threading.Barrier(8)

    def replica(i: int) -> None:
        start.wait()
        got.append(instance_secrets.get_or_create(engine, "test-key", lambda: f"value-{i}"))

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1
    assert got[0] == instance_secrets.read(engine, "test-key")
    # Later callers never call the factory again.
    assert instance_secrets.get_or_create(engine, "test-key", lambda: pytest.fail("factory called")) == got[0]


def test_an_old_key_file_is_imported_once_and_then_not_needed(engine: Engine, tmp_path: Path) -> None:
    old = tmp_path / "access" / "token-signing-key.pem"
    old.parent.mkdir()
    old.write_text("from-the-old-install\n")
    assert instance_secrets.get_or_create(engine, "imported", lambda: "fresh", old) == "from-the-old-install"
    old.unlink()
    assert instance_secrets.get_or_create(engine, "imported", lambda: "fresh", old) == "from-the-old-install"
    # A row wins over a file (another replica's folder may hold a different old key).
    other = tmp_path / "other-key"
    other.write_text("another")
    assert instance_secrets.get_or_create(engine, "imported", lambda: "fresh", other) == "from-the-old-install"


def test_failed_logins_are_counted_in_the_database(engine: Engine) -> None:
    """Two limiters (two replicas) on one database see each other's failures; a success clears the pair."""
    a = RateLimiter(per_pair=3, per_addr=100, window=300, counters=DatabaseCounters(engine))
    b = RateLimiter(per_pair=3, per_addr=100, window=300, counters=DatabaseCounters(engine))
    a.fail("admin", "10.0.0.1")
    b.fail("admin", "10.0.0.1")
    assert a.retry_after("admin", "10.0.0.1") == 0
    a.fail("admin", "10.0.0.1")
    assert b.retry_after("admin", "10.0.0.1") > 0
    assert b.retry_after("admin", "10.0.0.2") == 0
    b.fail("x\0" + "y" * 500, "10.0.0.3")  # any user name a client sends fits a row
    wait, known = a.check("admin", "10.0.0.1")
    assert wait > 0 and known
    b.succeeded("admin", "10.0.0.1")
    assert a.check("admin", "10.0.0.1") == (0, False)


def test_an_upgraded_installation_keeps_signing_with_its_old_key_file(tmp_path: Path) -> None:
    """Tokens issued before the upgrade (with the data folder's key) stay valid after it."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from hallmark.access import crypto
    from hallmark.access.service import AccessService
    from hallmark.config import load_config

    data = tmp_path / "data"
    pem = crypto.new_signing_key_pem()
    (data / "access").mkdir(parents=True)
    (data / "access" / "token-signing-key.pem").write_text(pem)
    old = crypto.TokenSigner(pem, "hallmark", 300)
    issued_before, _, _ = old.issue("alice", [], {})
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    eng = make_engine(cfg.database_url, 2)
    migrate(eng)
    try:
        svc = AccessService(cfg, eng)
        assert svc.signer.verify(issued_before)["sub"] == "alice"
        key = serialization.load_pem_private_key(pem.encode(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # ES256
        public = key.public_key()
        fresh, _, _ = svc.signer.issue("bob", [], {})
        assert jwt.decode(fresh, public, algorithms=["ES256"], audience="hallmark")["sub"] == "bob"
    finally:
        eng.dispose()


def test_old_counter_rows_are_pruned(engine: Engine) -> None:
    """Rows past any back-off and window are deleted, so the table does not grow with every guesser."""
    from sqlalchemy import func, select

    from hallmark.metadata.tables import rate_counters

    counters = DatabaseCounters(engine)
    old = RateLimiter(per_pair=3, per_addr=100, window=300, counters=counters, clock=lambda: 1_000_000.0)
    old.fail("someone", "10.0.0.1")
    recent = RateLimiter(per_pair=3, per_addr=100, window=300, counters=counters)
    recent.fail("admin", "10.0.0.2")  # prunes what is older than three windows
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rate_counters)).scalar() == 2  # admin's pair + address
