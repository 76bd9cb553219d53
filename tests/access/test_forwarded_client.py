"""End to end: behind a trusted proxy, failed logins and the audit log name the forwarded client."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server


@pytest.mark.parametrize("trusted", [True, False])
def test_audit_and_throttle_use_the_forwarded_client(tmp_path, trusted: bool) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"HALLMARK_SERVER__TRUSTED_PROXIES": "127.0.0.1/32"} if trusted else {}
    srv = Server(data, env=env, access=True).start()
    try:
        password = (data / "initial-admin-password").read_text().strip()
        r = httpx.get(
            srv.url + "/auth/token",
            auth=("admin", "wrong-password-123"),
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert r.status_code == 401
        entries = httpx.get(
            srv.url + "/api/v1/audit", params={"action": "login"}, auth=("admin", password)
        ).json()["entries"]
        denied = [e for e in entries if e["result"] == "denied"]
        assert denied, entries
        assert denied[-1]["client_addr"] == ("198.51.100.7" if trusted else "127.0.0.1")
    finally:
        srv.stop()
