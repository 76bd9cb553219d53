"""Cached decisions follow changes made elsewhere: two ``hallmark serve`` replicas on one PostgreSQL
(a stage change through one is seen by the other's next review), and ``require_signature`` with a
signature pushed over the registry after a denial (the referrer changes the image's stamp)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from typer.testing import CliRunner

from hallmark.admission.tables import admission_decisions
from hallmark.cli import app as cli_app
from hallmark.signing.keys import generate_test_ca_and_leaf, write_certificates, write_test_pki
from tests.admission.reviews import pod
from tests.conftest import PostgresServer, Server, free_port
from tests.ocihelp import push_image
from tests.pipeline.test_pipeline import wait_for

GATES_OFF = {"HALLMARK_CATALOG__GATE_MAX_SEVERITY": "none", "HALLMARK_CATALOG__REQUIRE_COMPLETE_SCAN": "false"}


def validate(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(server.url + "/admission/validate", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json()["response"])


def promote(server: Server, repo: str, digest: str, to: str, **kw: Any) -> None:
    r = httpx.post(
        f"{server.url}/api/v1/repositories/{repo}/images/{digest}/catalog/promote",
        json={"to": to, "reason": "reviewed", **kw},
        timeout=30,
    )
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def replicas(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two servers on one PostgreSQL database and one data folder (shared blobs)."""
    data = tmp_path_factory.mktemp("replicas") / "data"
    data.mkdir()
    db_url = postgres.create_db(f"t{free_port()}")
    a = Server(data, db_url, env=GATES_OFF).start()
    b = Server(data, db_url, env={**GATES_OFF, "HALLMARK_PIPELINE__WORKERS": "0"})
    try:
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_a_change_through_one_replica_is_seen_by_the_other(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    with httpx.Client(base_url=a.url, timeout=30) as c:
        digest = push_image(c, "rep/app", "v1")
        alt = push_image(c, "rep/app", "v2")
        for d in (digest, alt):
            assert wait_for(c, "rep/app", d, timeout=120)["status"] == "done"
    promote(a, "rep/app", alt, "approved")
    body = pod("web", "shop", f"{b.host}/rep/app:v1")
    assert validate(b, body)["allowed"] is False  # staging, now cached on b
    promote(a, "rep/app", digest, "approved")
    assert validate(b, body)["allowed"] is True
    assert validate(b, body)["allowed"] is True  # cached on b
    promote(a, "rep/app", digest, "retired", replacement="rep/app:v2")
    resp = validate(b, body)
    assert resp["allowed"] is False
    assert "[retired]" in resp["status"]["message"] and "use rep/app:v2 instead" in resp["status"]["message"]
    # The latest decision per workload is stored on PostgreSQL too (upsert over the earlier ones).
    engine = create_engine(str(b.db_url))
    with engine.connect() as conn:
        rows = conn.execute(select(admission_decisions).where(admission_decisions.c.name == "web")).mappings().all()
    engine.dispose()
    assert [(r["namespace"], r["kind"], r["allowed"], r["uid"]) for r in rows] == [
        ("shop", "Pod", False, body["request"]["uid"])
    ]


@pytest.fixture(scope="module")
def signing_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Path]]]:
    root = tmp_path_factory.mktemp("admission-signing")
    pki = generate_test_ca_and_leaf("ec", curve="p256", common_name="Hallmark Enterprise Signer")
    keys = write_test_pki(root / "keys", pki)
    store = root / "store" / "x509" / "ca" / "hallmark"
    store.mkdir(parents=True)
    write_certificates(store / "ca.crt", [pki.ca_cert])
    policy = root / "trustpolicy.json"
    statement = {
        "name": "enterprise",
        "registryScopes": ["*"],
        "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:hallmark"],
        "trustedIdentities": ["*"],
    }
    policy.write_text(json.dumps({"version": "1.0", "trustPolicies": [statement]}))
    data = root / "data"
    data.mkdir()
    env = {
        **GATES_OFF,
        "HALLMARK_SIGNING__TRUST_POLICY": str(policy),
        "HALLMARK_SIGNING__TRUST_STORE": str(root / "store"),
        "HALLMARK_ADMISSION__REQUIRE_SIGNATURE": "true",
    }
    srv = Server(data, env=env).start()
    try:
        yield srv, keys
    finally:
        srv.stop()


def test_require_signature_signed_and_unsigned(signing_site: tuple[Server, dict[str, Path]]) -> None:
    srv, keys = signing_site
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        signed = push_image(c, "sig/app", "signed")
        unsigned = push_image(c, "sig/app", "unsigned")
        for d in (signed, unsigned):
            assert wait_for(c, "sig/app", d, timeout=120)["status"] == "done"
    for d in (signed, unsigned):
        promote(srv, "sig/app", d, "approved")
    body = pod("web", "shop", f"{srv.host}/sig/app:signed")
    resp = validate(srv, body)
    assert resp["allowed"] is False
    assert "[signature] no valid enterprise signature under the trust policy" in resp["status"]["message"]
    ref = f"{srv.host}/sig/app:signed"
    out = CliRunner().invoke(
        cli_app, ["sign", ref, "--insecure", "--key", str(keys["key"]), "--cert", str(keys["chain"])]
    )
    assert out.exit_code == 0, out.output
    assert validate(srv, body) == {"uid": body["request"]["uid"], "allowed": True}
    resp = validate(srv, pod("web", "shop", f"{srv.host}/sig/app:unsigned"))
    assert resp["allowed"] is False and "[signature]" in resp["status"]["message"]
    assert validate(srv, pod("web", "shop", f"{srv.host}/sig/app@{signed}"))["allowed"] is True
