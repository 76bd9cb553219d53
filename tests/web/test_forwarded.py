"""Behind a load balancer: clients are told apart by the forwarding header of a trusted proxy,
and a client talking to the server directly cannot pose as someone else."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server

PROXY = "127.0.0.1"  # trusted: stands for the load balancer
STRANGER = "127.0.0.2"  # any other address reaching the server directly


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("forwarded") / "data"
    data.mkdir()
    env = {"HALLMARK_SERVER__TRUSTED_PROXIES": f"{PROXY}/32", "HALLMARK_ACCESS__MAX_FAILED_PER_USER": "2"}
    srv = Server(data, env=env, access=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def login(server: Server, source: str, forwarded_for: str, password: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as c:
        return c.get(server.url + "/auth/token", auth=("admin", password), headers={"X-Forwarded-For": forwarded_for})


def test_forwarded_for_is_honoured_only_from_the_trusted_proxy(server: Server) -> None:
    password = (server.data_dir / "initial-admin-password").read_text().strip()
    for _ in range(2):
        assert login(server, PROXY, "198.51.100.1", "wrong-password").status_code == 401
    r = login(server, PROXY, "198.51.100.1", password)
    assert r.status_code == 429 and r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(r.headers["Retry-After"]) > 0
    # Another client behind the same balancer is not held back.
    assert login(server, PROXY, "198.51.100.2", password).status_code == 200
    # Spoofing: a client reaching the server directly and naming another address is throttled as
    # itself, whatever it claims, and the address it named is not charged.
    for _ in range(2):
        assert login(server, STRANGER, "198.51.100.3", "wrong-password").status_code == 401
    assert login(server, STRANGER, "198.51.100.4", password).status_code == 429
    assert login(server, PROXY, "198.51.100.3", password).status_code == 200
