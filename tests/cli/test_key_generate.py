"""``hallmark key generate`` writes a trust policy and trust store that verify what the key signs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hallmark.cli import app
from hallmark.signing.policy import load_policy
from tests.ocihelp import tar_layer, write_oci_layout


def test_generated_trust_config_verifies_a_signature(tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    r = runner.invoke(app, ["key", "generate", "--out", str(keys), "--type", "ec"])
    assert r.exit_code == 0, r.output
    policy, store = keys / "trustpolicy.json", keys / "truststore"
    assert f"trust policy: {policy}" in r.output and f"trust store: {store}" in r.output
    assert (store / "x509" / "ca" / "hallmark" / "ca.crt").read_bytes() == (keys / "ca.crt").read_bytes()
    doc = json.loads(policy.read_text())
    (entry,) = doc["trustPolicies"]
    assert entry["trustStores"] == ["ca:hallmark"] and entry["signatureVerification"] == {"level": "strict"}
    assert entry["trustedIdentities"] == [next(ln for ln in r.output.splitlines() if ln.startswith("identity: "))[10:]]
    load_policy(policy.read_bytes())  # a valid Notary trust policy

    layout = tmp_path / "layout"
    write_oci_layout(layout, "v1", [tar_layer({"hello.txt": b"hi"})])
    r = runner.invoke(
        app, ["sign", f"oci:{layout}:v1", "--key", str(keys / "leaf.key"), "--cert", str(keys / "leaf.crt")]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", f"oci:{layout}:v1", "--policy", str(policy), "--trust-store", str(store)])
    assert r.exit_code == 0, r.output
    assert "at level strict" in r.output

    # A second key's trust configuration does not accept the first key's signature.
    other = tmp_path / "other"
    assert runner.invoke(app, ["key", "generate", "--out", str(other), "--type", "ec"]).exit_code == 0
    r = runner.invoke(
        app,
        [
            "verify",
            f"oci:{layout}:v1",
            "--policy",
            str(other / "trustpolicy.json"),
            "--trust-store",
            str(other / "truststore"),
        ],
    )
    assert r.exit_code == 1


def test_store_name_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["key", "generate", "--out", str(tmp_path / "k"), "--store-name", "a/b"])
    assert r.exit_code == 2
    assert not (tmp_path / "k").exists()
