"""Provenance read from what is pushed, in-process on a real data folder (SQLite, filesystem blobs).

Pushes go through the registry service and the pipeline's ``provenance`` job runs on its own
lane here, so every assertion is about state, never timing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hallmark.app import Hallmark
from hallmark.config import load_config
from hallmark.provenance.ingest import backfill
from hallmark.provenance.store import digests_built_from, provenance_for, summary_for
from hallmark.provenance.tables import provenance
from hallmark.registry.service import push_manifest_sync
from tests.ocihelp import OCI_INDEX, OCI_MANIFEST, descriptor
from tests.provenance.attest import (
    COMMIT_A,
    COMMIT_B,
    annotated_image,
    envelope,
    new_key,
    referrer,
    sha256,
    slsa_v1,
    write_public_key,
)

REPO = "acme/shop"


@pytest.fixture
def hm(tmp_path: Path) -> Iterator[Hallmark]:
    key = new_key()
    write_public_key(key, tmp_path / "trust" / "keys" / "ci.pub")
    env = {
        "HALLMARK_DATA_DIR": str(tmp_path / "data"),
        "HALLMARK_SIGNING__TRUST_STORE": str(tmp_path / "trust"),
        "HALLMARK_PIPELINE__CONTENT_CHECKS": "false",
    }
    h = Hallmark.open(load_config(environ=env))
    h.trusted_key = key  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        h.close()


def put(hm: Hallmark, blobs: list[bytes], manifest: bytes, media_type: str = OCI_MANIFEST) -> str:
    for blob in blobs:
        digest, size = hm.blobs.put(blob)
        hm.meta.link_blob(REPO, digest, size)
    digest = push_manifest_sync(hm.registry, REPO, manifest, media_type)
    hm.pipeline.on_push(REPO, digest)
    while hm.pipeline.run_one("test", ["provenance"]):
        pass
    return digest


def push_image(hm: Hallmark, commit: str = COMMIT_A) -> tuple[str, bytes]:
    layer, config, manifest = annotated_image("shop", commit)
    return put(hm, [layer, config], manifest), manifest


def attach(hm: Hallmark, subject: bytes, layer: bytes) -> str:
    return put(hm, [b"{}", layer], referrer(subject, layer))


def rows(hm: Hallmark, digest: str) -> list[dict[str, Any]]:
    return provenance_for(hm.meta, digest)


def events(hm: Hallmark, type_: str) -> list[dict[str, Any]]:
    return hm.pipeline.store.list_events(0, 100, type_, None)


def test_annotations_and_labels_are_one_row_each_with_normalised_source(hm: Hallmark) -> None:
    digest, _ = push_image(hm)
    got = rows(hm, digest)
    assert [(r["kind"], r["origin"]) for r in got] == [("annotation", "manifest"), ("label", "config")]
    ann, label = got
    assert ann["source_repo"] == label["source_repo"] == "https://github.com/acme/shop"
    assert ann["revision"] == label["revision"] == COMMIT_A
    assert ann["verified"] is None and ann["repository"] == REPO
    assert ann["facts"]["created"] == "2026-12-01T10:00:00Z"
    assert ann["facts"]["base.name"] == "docker.io/library/debian:12"
    assert ann["facts"]["source"] == "https://github.com/acme/shop/"  # as written, the column is normalised
    assert label["facts"]["version"] == "1.2.3"
    # pushed again (rescan, re-push): the same sources are replaced, not duplicated
    hm.pipeline.on_push(REPO, digest)
    while hm.pipeline.run_one("test", ["provenance"]):
        pass
    assert len(rows(hm, digest)) == 2


def test_signed_slsa_v1_referrer_verifies_with_a_trusted_key(hm: Hallmark) -> None:
    digest, manifest = push_image(hm)
    env = envelope(slsa_v1(digest), hm.trusted_key, keyid="ci")  # type: ignore[attr-defined]
    ref = attach(hm, manifest, env)
    slsa = [r for r in rows(hm, digest) if r["kind"] == "slsa"]
    assert len(slsa) == 1
    row = slsa[0]
    assert row["origin"] == ref and row["verified"] is True
    assert "keys/ci.pub" in row["verify_detail"]
    assert row["source_repo"] == "https://github.com/acme/shop"
    assert row["revision"] == COMMIT_B
    assert row["pipeline"] == ".github/workflows/build.yml"
    assert row["run_id"] == "4242"
    assert row["run_url"] == "https://github.com/acme/shop/actions/runs/4242/attempts/1"
    assert row["builder_id"].startswith("https://github.com/acme/shop/.github/workflows/build.yml")
    assert row["facts"]["predicateType"] == "https://slsa.dev/provenance/v1"


def test_unknown_signer_is_recorded_as_not_verified_with_the_reason(hm: Hallmark) -> None:
    digest, manifest = push_image(hm)
    attach(hm, manifest, envelope(slsa_v1(digest), new_key(), keyid="stranger"))
    (row,) = [r for r in rows(hm, digest) if r["kind"] == "slsa"]
    assert row["verified"] is False
    assert "no signature verifies with the 1 trusted key(s)" in row["verify_detail"]
    assert "'stranger'" in row["verify_detail"]


def test_tampered_payload_does_not_verify(hm: Hallmark) -> None:
    digest, manifest = push_image(hm)
    doc = json.loads(envelope(slsa_v1(digest), hm.trusted_key))  # type: ignore[attr-defined]
    doc["payload"] = base64.b64encode(json.dumps(slsa_v1(digest, commit="c" * 40)).encode()).decode()
    attach(hm, manifest, json.dumps(doc).encode())
    (row,) = [r for r in rows(hm, digest) if r["kind"] == "slsa"]
    assert row["verified"] is False and row["revision"] == "c" * 40


def test_contradicting_sources_are_all_kept_and_the_verified_one_comes_first(hm: Hallmark) -> None:
    digest, manifest = push_image(hm, commit=COMMIT_A)
    attach(hm, manifest, envelope(slsa_v1(digest, commit=COMMIT_B), hm.trusted_key))  # type: ignore[attr-defined]
    attach(hm, manifest, envelope(slsa_v1(digest, commit="d" * 40), new_key()))
    got = rows(hm, digest)
    assert [(r["kind"], r["verified"], r["revision"]) for r in got] == [
        ("slsa", True, COMMIT_B),
        ("slsa", False, "d" * 40),
        ("annotation", None, COMMIT_A),
        ("label", None, COMMIT_A),
    ]
    summary = summary_for(hm.meta, digest)
    assert summary is not None
    assert summary["revision"] == COMMIT_B and summary["verified"] is True
    assert summary["conflicts"] == ["revision"] and summary["sources"] == 4
    built = digests_built_from(hm.meta, "git@github.com:acme/shop.git")
    assert [(b["digest"], b["revision"], b["verified"]) for b in built] == [(digest, COMMIT_B, True)]
    assert digests_built_from(hm.meta, "https://github.com/acme/shop", revision=COMMIT_A[:7])[0]["digest"] == digest
    assert digests_built_from(hm.meta, "https://github.com/acme/other") == []


@pytest.mark.parametrize(
    ("name", "layer", "reason"),
    [
        ("malformed DSSE", b'{"payloadType": "application/vnd.in-toto+json", "payload": 5}', "not a base64 string"),
        ("not JSON", b"\x00\x01 not json", "not JSON"),
        (
            "payload not base64",
            b'{"payloadType": "application/vnd.in-toto+json", "payload": "!!not-base64!!", "signatures": []}',
            "not valid base64",
        ),
    ],
)
def test_bad_attestations_are_reported_and_write_nothing(hm: Hallmark, name: str, layer: bytes, reason: str) -> None:
    digest, manifest = push_image(hm)
    ref = attach(hm, manifest, layer)
    assert [r["kind"] for r in rows(hm, digest)] == ["annotation", "label"], name
    (event,) = events(hm, "provenance.rejected")
    assert event["repository"] == REPO and event["digest"] == ref
    (rejected,) = event["payload"]["rejected"]
    assert rejected["origin"] == ref and rejected["subject"] == digest
    assert reason in rejected["reason"]


def test_statement_about_another_digest_is_refused(hm: Hallmark) -> None:
    digest, manifest = push_image(hm)
    other = "sha256:" + "e" * 64
    attach(hm, manifest, envelope(slsa_v1(other), hm.trusted_key))  # type: ignore[attr-defined]
    assert [r["kind"] for r in rows(hm, digest)] == ["annotation", "label"]
    (event,) = events(hm, "provenance.rejected")
    assert event["payload"]["rejected"][0]["reason"] == f"no subject of the in-toto statement is {digest}"
    with hm.meta.engine.connect() as conn:
        assert conn.execute(provenance.select().where(provenance.c.digest == other)).first() is None


def test_a_good_statement_beside_a_bad_one_is_still_recorded(hm: Hallmark) -> None:
    digest, manifest = push_image(hm)
    good = envelope(slsa_v1(digest), hm.trusted_key)  # type: ignore[attr-defined]
    bad = b'{"payloadType": "application/vnd.in-toto+json", "payload": "%%%"}'
    doc = json.loads(referrer(manifest, good))
    doc["layers"].append(descriptor("application/vnd.dsse.envelope.v1+json", bad))
    ref = put(hm, [b"{}", good, bad], json.dumps(doc).encode())
    assert [(r["kind"], r["origin"]) for r in rows(hm, digest)] == [
        ("slsa", ref),
        ("annotation", "manifest"),
        ("label", "config"),
    ]
    (event,) = events(hm, "provenance.rejected")
    assert [r["origin"] for r in event["payload"]["rejected"]] == [f"{ref}#1"]


def test_buildkit_attestation_manifest_in_an_index(hm: Hallmark) -> None:
    digest, manifest = push_image(hm)
    statement = json.dumps(slsa_v1(digest, commit=COMMIT_B)).encode()
    att = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", b"{}"),
            "layers": [
                descriptor(
                    "application/vnd.in-toto+json",
                    statement,
                    annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"},
                )
            ],
        }
    ).encode()
    att_digest = put(hm, [b"{}", statement], att)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                descriptor(OCI_MANIFEST, manifest, platform={"architecture": "amd64", "os": "linux"}),
                descriptor(
                    OCI_MANIFEST,
                    att,
                    platform={"architecture": "unknown", "os": "unknown"},
                    annotations={
                        "vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": digest,
                    },
                ),
            ],
        }
    ).encode()
    index_digest = put(hm, [], index, OCI_INDEX)
    own = [r for r in rows(hm, digest) if r["kind"] == "slsa"]
    assert [(r["origin"], r["verified"], r["revision"]) for r in own] == [(att_digest, None, COMMIT_B)]
    assert own[0]["verify_detail"] == "unsigned in-toto statement"
    # asked about the index (what Kubernetes reports as imageID), the children's rows come along
    via = rows(hm, index_digest)
    assert {(r["kind"], r["via"]) for r in via} == {("slsa", "child"), ("annotation", "child"), ("label", "child")}


def test_backfill_reads_images_pushed_before_provenance_was_recorded(hm: Hallmark) -> None:
    layer, config, manifest = annotated_image("old")
    for blob in (layer, config):
        d, size = hm.blobs.put(blob)
        hm.meta.link_blob(REPO, d, size)
    digest = push_manifest_sync(hm.registry, REPO, manifest, OCI_MANIFEST)  # no on_push: pushed "before"
    assert rows(hm, digest) == []
    stats = backfill(hm.pipeline)
    assert stats["manifests"] == 1 and stats["sources"] == 2
    assert [r["kind"] for r in rows(hm, digest)] == ["annotation", "label"]
    assert sha256(manifest) == digest
