"""First start bootstrap, failed-login rate limits and login timing, on a fresh server (SQLite)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("fresh") / "data"
    data.mkdir()
    env = {"HALLMARK_ACCESS__MAX_FAILED_PER_USER": "3", "HALLMARK_ACCESS__MAX_FAILED_PER_ADDRESS": "12"}
    srv = Server(data, env=env, access=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def _log(srv: Server) -> str:
    return (srv.data_dir.parent / f"server-{srv.port}.log").read_text(errors="replace")


def _admin_password(srv: Server) -> str:
    return (srv.data_dir / "initial-admin-password").read_text().strip()


def test_bootstrap_admin_once(fresh: Server) -> None:
    pw_file = fresh.data_dir / "initial-admin-password"
    assert pw_file.stat().st_mode & 0o777 == 0o600
    password = _admin_password(fresh)
    assert len(password) >= 20
    assert _log(fresh).count(password) == 1  # printed once on the console
    me = httpx.get(fresh.url + "/api/v1/me", auth=("admin", password)).json()
    assert me["catalog_roles"] == ["administrator"]
    fresh.restart()
    assert _admin_password(fresh) == password and _log(fresh).count(password) == 1
    assert _log(fresh).count("Created user 'admin'") == 1
    httpx.post(
        fresh.url + "/api/v1/users", json={"name": "eve", "password": "eve-password-1"}, auth=("admin", password)
    ).raise_for_status()


def test_login_timing_does_not_reveal_users(fresh: Server) -> None:
    def timed(user: str) -> float:
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            httpx.get(fresh.url + "/auth/token", auth=(user, "not-the-password-0"))
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    # Different user names, so the per-user limit (3) is not reached here.
    known = timed("admin")
    unknown = timed("no-such-user")
    assert 0.33 < known / unknown < 3, (known, unknown)  # both run argon2


def test_failed_logins_are_rate_limited(fresh: Server) -> None:
    url = fresh.url + "/auth/token"
    # admin already failed 3 times in the timing test: locked, even with the right password.
    assert httpx.get(url, auth=("admin", _admin_password(fresh))).status_code == 429
    assert httpx.get(url, auth=("eve", "eve-password-1")).status_code == 200
    for _ in range(3):
        assert httpx.get(url, auth=("eve", "wrong-password")).status_code == 401
    r = httpx.get(url, auth=("eve", "eve-password-1"))
    assert r.status_code == 429 and r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    r = httpx.get(fresh.url + "/v2/", auth=("eve", "eve-password-1"))
    assert r.status_code == 429
    assert httpx.get(fresh.url + "/api/v1/me", auth=("eve", "eve-password-1")).status_code == 429
    # Per client address: spraying many user names locks the address out.
    for i in range(6):
        httpx.get(url, auth=(f"spray{i}", "guess-password"))
    assert httpx.get(url, auth=("spray-new", "guess-password")).status_code == 429
    audit = Path(fresh.data_dir)  # the denials are audited (checked through the store)
    from hallmark.access.store import AccessStore
    from hallmark.metadata.db import make_engine

    time.sleep(1.0)  # background flush interval
    engine = make_engine(f"sqlite:///{audit / 'hallmark.db'}", 1)
    rows = AccessStore(engine).query_audit(action="login")
    engine.dispose()
    reasons = [r.detail for r in rows if r.result == "denied"]
    assert any(d and "rate-limited" in d for d in reasons)
    assert all("wrong-password" not in (d or "") and "guess-password" not in (d or "") for d in reasons)
