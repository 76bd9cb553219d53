"""Policy configuration and the failure policy, in-process: bad keys stop the server with the key
named, overrides resolve per namespace, and what cannot be evaluated is denied (``fail``) or
allowed with a warning (``ignore``) while a missing tag stays denied either way."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hallmark.admission.policy import DigestRules, PolicySet, hallmark_hosts
from hallmark.admission.references import parse_reference
from hallmark.admission.service import Admission
from hallmark.app import Hallmark, build_app
from hallmark.config import ConfigError, load_config
from tests.admission.reviews import pod


def test_bad_admission_keys_are_refused_with_the_key_named(tmp_path: Path) -> None:
    for key, value, where in [
        ("HALLMARK_ADMISSION__MODE", "block", "admission.mode"),
        ("HALLMARK_ADMISSION__FAILURE_POLICY", "open", "admission.failure_policy"),
        ("HALLMARK_ADMISSION__MIN_GRADE", "Z", "admission.min_grade"),
        ("HALLMARK_ADMISSION__MAX_SEVERITY", "severe", "admission.max_severity"),
        ("HALLMARK_SERVER__PUBLIC_HOSTS", "https://x.example/", "server.public_hosts"),
    ]:
        with pytest.raises(ConfigError, match=where):
            load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path), key: value})


def test_namespace_overrides_and_hallmark_hosts(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text(
        """
[server]
listen = "0.0.0.0:5000"
public_url = "https://hm.example:8443"
public_hosts = ["Registry.Example"]

[admission]
min_grade = "c"
allowed_registries = ["quay.io/corp/*"]

[admission.namespaces."team-*"]
mode = "audit"
max_severity = "high"

[admission.namespaces.team-core]
require_signature = true
"""
    )
    cfg = load_config(tmp_path / "h.toml", environ={"HALLMARK_DATA_DIR": str(tmp_path)})
    assert hallmark_hosts(cfg) == {"registry.example", "hm.example:8443"}  # a wildcard listen names no host
    policies = PolicySet(cfg)
    core, web, other = (policies.for_namespace(ns) for ns in ("team-core", "team-web", "shop"))
    assert (core.mode, core.rules) == ("enforce", DigestRules(True, "C", None))  # its own table, not the glob
    assert (web.mode, web.rules) == ("audit", DigestRules(False, "C", "high"))
    assert (other.mode, other.rules, other.source) == ("enforce", DigestRules(False, "C", None), "[admission]")
    assert other.registry_allowed(parse_reference("quay.io/corp/tool:1")) == "quay.io/corp/*"
    assert other.registry_allowed(parse_reference("quay.io/evil/tool:1")) is None


def _client(tmp_path: Path, **env: str) -> tuple[asyncio.AbstractEventLoop, TestClient[Any, Any], Hallmark]:
    cfg = load_config(
        environ={
            "HALLMARK_DATA_DIR": str(tmp_path / "data"),
            "HALLMARK_ACCESS__ENABLED": "false",
            "HALLMARK_PIPELINE__ENABLED": "false",
            "HALLMARK_LIFECYCLE__SCHEDULER": "false",
            **env,
        }
    )
    hm = Hallmark.open(cfg)
    loop = asyncio.new_event_loop()
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(hm)), loop=loop)
    loop.run_until_complete(client.start_server())
    return loop, client, hm


def _validate(loop: asyncio.AbstractEventLoop, client: TestClient[Any, Any], body: Any) -> dict[str, Any]:
    async def call() -> dict[str, Any]:
        r = await client.post("/admission/validate", data=json.dumps(body))
        assert r.status == 200
        return dict((await r.json())["response"])

    return loop.run_until_complete(call())


@pytest.mark.parametrize("failure_policy", ["fail", "ignore"])
def test_failure_policy(tmp_path: Path, failure_policy: str) -> None:
    loop, client, hm = _client(tmp_path, HALLMARK_ADMISSION__FAILURE_POLICY=failure_policy)
    try:
        bad = _validate(loop, client, pod("web", "shop", "Not/A Reference"))
        missing = _validate(loop, client, pod("web", "shop", "127.0.0.1:5000/app:v1"))
        malformed = _validate(loop, client, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        hm.close()
    # A tag Hallmark does not have is a rule, not an evaluation failure: denied under both policies.
    assert missing["allowed"] is False and "tag v1 of app does not exist in Hallmark" in missing["status"]["message"]
    if failure_policy == "fail":
        assert bad["allowed"] is False and "not a valid image reference" in bad["status"]["message"]
        assert malformed["allowed"] is False and malformed["status"]["code"] == 400
    else:
        assert bad["allowed"] is True and "allowed by failure_policy = ignore" in bad["warnings"][0]
        assert malformed["allowed"] is True and "request is missing" in malformed["warnings"][0]


def test_evaluation_over_the_time_budget_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An evaluation that cannot finish (blocked until the answer is in) is answered by the
    failure policy when the budget runs out."""
    release = threading.Event()

    def stuck(self: Admission, review: Any, mutate: bool = False) -> Any:
        release.wait(30)
        raise RuntimeError("released after the test")

    monkeypatch.setattr(Admission, "decide", stuck)
    loop, client, hm = _client(tmp_path, HALLMARK_ADMISSION__TIMEOUT_SECONDS="0.2")
    try:
        resp = _validate(loop, client, pod("web", "shop", "127.0.0.1:5000/app:v1"))
    finally:
        release.set()
        loop.run_until_complete(client.close())
        loop.close()
        hm.close()
    assert resp["allowed"] is False and resp["status"]["code"] == 504
    assert "evaluation took longer than 0.2 s" in resp["status"]["message"]


@pytest.mark.parametrize(("networks", "status"), [("10.0.0.0/8,192.168.0.0/16", 403), ("10.0.0.0/8,127.0.0.0/8", 200)])
def test_allowed_networks(tmp_path: Path, networks: str, status: int) -> None:
    """Callers outside ``allowed_networks`` are refused before anything is evaluated or audited."""
    loop, client, hm = _client(tmp_path, HALLMARK_ADMISSION__ALLOWED_NETWORKS=networks)

    async def call() -> int:
        r = await client.post("/admission/validate", data=json.dumps(pod("web", "shop", "127.0.0.1:5000/app:v1")))
        return r.status

    try:
        got = loop.run_until_complete(call())
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        hm.close()
    assert got == status


def test_allowed_networks_must_be_networks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"admission\.allowed_networks"):
        load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path), "HALLMARK_ADMISSION__ALLOWED_NETWORKS": "api-server"})
