"""Failed-login throttling: per (client, user) pair with growing back-off, per address, bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hallmark.access.service import AccessService, AuthFailed, RateLimited, RateLimiter
from hallmark.config import load_config
from hallmark.metadata.db import make_engine, migrate
from tests.conftest import Server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_per_pair_and_other_clients_are_not_affected() -> None:
    clock = Clock()
    lim = RateLimiter(per_pair=3, per_addr=100, window=300, clock=clock)
    for _ in range(3):
        assert lim.retry_after("admin", "10.0.0.1") == 0
        lim.fail("admin", "10.0.0.1")
    first = lim.retry_after("admin", "10.0.0.1")
    assert first == RateLimiter.BACKOFF
    # Another client, or another user from this client, is not slowed down.
    assert lim.retry_after("admin", "10.0.0.2") == 0
    assert lim.retry_after("alice", "10.0.0.1") == 0
    clock.now += first
    assert lim.retry_after("admin", "10.0.0.1") == 0
    lim.fail("admin", "10.0.0.1")
    second = lim.retry_after("admin", "10.0.0.1")
    clock.now += second
    lim.fail("admin", "10.0.0.1")
    third = lim.retry_after("admin", "10.0.0.1")
    assert first < second < third <= 300
    # The back-off never exceeds the window, and the pair is forgotten a window after it ends.
    for _ in range(20):
        clock.now += lim.retry_after("admin", "10.0.0.1")
        lim.fail("admin", "10.0.0.1")
    assert lim.retry_after("admin", "10.0.0.1") == 300
    clock.now += 300 + 300
    assert lim.retry_after("admin", "10.0.0.1") == 0
    # A success clears the pair at once.
    for _ in range(3):
        lim.fail("bob", "10.0.0.3")
    assert lim.retry_after("bob", "10.0.0.3") > 0
    lim.succeeded("bob", "10.0.0.3")
    assert lim.retry_after("bob", "10.0.0.3") == 0


def test_spraying_user_names_from_one_address_is_capped() -> None:
    clock = Clock()
    lim = RateLimiter(per_pair=5, per_addr=4, window=60, clock=clock)
    for i in range(4):
        lim.fail(f"user{i}", "10.0.0.9")
        clock.now += 1
    assert lim.retry_after("someone-new", "10.0.0.9") == pytest.approx(56)  # until the oldest leaves the window
    assert lim.retry_after("someone-new", "10.0.0.8") == 0
    clock.now += 56
    assert lim.retry_after("someone-new", "10.0.0.9") == 0


def test_full_map_evicts_the_oldest_keys_not_all() -> None:
    clock = Clock()
    lim = RateLimiter(per_pair=1, per_addr=1000, window=300, max_keys=3, clock=clock)
    for i in range(5):
        lim.fail(f"user{i}", f"10.0.1.{i}")
        clock.now += 0.1
    # The two oldest pairs made room; the three most recent are still throttled.
    assert [lim.retry_after(f"user{i}", f"10.0.1.{i}") > 0 for i in range(5)] == [False, False, True, True, True]
    # A key touched again becomes the most recent and survives the next evictions.
    clock.now = 2000.0  # past every back-off, within the window
    lim.fail("user2", "10.0.1.2")
    lim.fail("user5", "10.0.1.5")
    lim.fail("user6", "10.0.1.6")
    assert lim.retry_after("user2", "10.0.1.2") > 0
    assert lim.retry_after("user3", "10.0.1.3") == 0


@pytest.fixture
def access(tmp_path: Path) -> Iterator[AccessService]:
    cfg = load_config(
        environ={"HALLMARK_DATA_DIR": str(tmp_path / "data"), "HALLMARK_ACCESS__MAX_FAILED_PER_USER": "2"}
    )
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    svc.add_user("test", "admin", "admin-Secret-123456", ["administrator"])
    yield svc
    engine.dispose()


def test_authenticate_says_when_to_retry(access: AccessService) -> None:
    for _ in range(2):
        with pytest.raises(AuthFailed):
            access.authenticate("admin", "wrong-password", "192.0.2.1")
    with pytest.raises(RateLimited) as exc:
        access.authenticate("admin", "admin-Secret-123456", "192.0.2.1")
    assert exc.value.retry_after == RateLimiter.BACKOFF
    # Same user, another client: the right password works.
    assert access.authenticate("admin", "admin-Secret-123456", "192.0.2.2").name == "admin"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("ratelimit") / "data"
    data.mkdir()
    srv = Server(data, env={"HALLMARK_ACCESS__MAX_FAILED_PER_USER": "3"}, access=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def _from(addr: str) -> httpx.Client:
    """A client whose connections come from ``addr`` (any 127.0.0.0/8 address reaches the server)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=addr), timeout=30)


def test_guessing_admin_from_one_client_does_not_lock_out_another(guarded: Server) -> None:
    password = (guarded.data_dir / "initial-admin-password").read_text().strip()
    url = guarded.url + "/auth/token"
    with _from("127.0.0.1") as a, _from("127.0.0.2") as b:
        for _ in range(3):
            assert a.get(url, auth=("admin", "wrong-password")).status_code == 401
        r = a.get(url, auth=("admin", password))
        assert r.status_code == 429 and r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert b.get(url, auth=("admin", password)).status_code == 200
        assert b.get(guarded.url + "/api/v1/me", auth=("admin", password)).status_code == 200
