"""Advisory sets and rule bundles reach replicas that share no disk: ``db update`` on replica A's data
folder, then replica B (own data folder, same PostgreSQL, same bucket) scans with the new set and rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from hallmark.config import load_config
from hallmark.metadata.tables import state_versions
from hallmark.pipeline import shared_sets
from hallmark.pipeline.shared_sets import SharedSetError, fetch_folder, publish_folder
from hallmark.storage import FilesystemBlobStore
from tests.conftest import SHARED_DATA, PostgresServer, Server, free_port
from tests.content.test_rules_recheck import RULE, TOKEN, secrets_in
from tests.ocihelp import OCI_MANIFEST, image, push_blob, push_manifest, sha256, tar_layer, write_oci_layout
from tests.pipeline.test_pipeline import image_files, wait_for
from tests.s3help import shared_moto


def small_mirror(root: Path) -> Path:
    """One OSV record (Jinja2 < 2.10.1) from the shared snapshot and one secret rule."""
    with zipfile.ZipFile(SHARED_DATA / "osv" / "PyPI" / "all.zip") as zf:
        record = zf.read("PYSEC-2019-217.json")
    (root / "osv" / "PyPI").mkdir(parents=True)
    with zipfile.ZipFile(root / "osv" / "PyPI" / "all.zip", "w") as z:
        z.writestr("PYSEC-2019-217.json", record)
    (root / "secrets").mkdir()
    (root / "secrets" / "site.toml").write_text(RULE)
    return root


@pytest.mark.skipif(not (SHARED_DATA / "osv").is_dir(), reason="shared advisory snapshot not present")
def test_replica_without_the_set_fetches_it_from_the_bucket(postgres: PostgresServer, tmp_path: Path) -> None:
    moto = shared_moto(Path(tempfile.gettempdir()))
    s3 = moto.env(moto.new_bucket())
    db_url = postgres.create_db(f"t{free_port()}")
    data_a, data_b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    data_a.mkdir(parents=True)
    data_b.mkdir(parents=True)
    # A serves the registry only; B is the only one running the pipeline, so B must fetch the set.
    a = Server(data_a, db_url, env={**s3, "HALLMARK_PIPELINE__ENABLED": "false"})
    b = Server(data_b, db_url, env=s3)
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(Server.start, (a, b)))
        env = {**os.environ, **s3, "HALLMARK_DATA_DIR": str(data_a), "HALLMARK_DATABASE_URL": db_url}
        r = subprocess.run(
            [sys.executable, "-m", "hallmark", "db", "update", "--mirror", str(small_mirror(tmp_path / "m"))],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr

        files = {**image_files("11", "bullseye"), "app/settings.ini": f"[api]\ntoken = {TOKEN}\n".encode()}
        layer = tar_layer(files)
        config, manifest = image([layer], {"config": {"User": "app"}})
        digest = sha256(manifest)
        with httpx.Client(base_url=b.url, timeout=30) as c:
            for blob in (layer, config):
                push_blob(c, "shared/app", blob)
            assert push_manifest(c, "shared/app", "v1", manifest, OCI_MANIFEST).status_code == 201
            assert wait_for(c, "shared/app", digest, timeout=120)["status"] == "done"
        with httpx.Client(base_url=a.url, timeout=30) as c:  # the same answers on either replica
            url = f"/api/v1/repositories/shared/app/images/{digest}/reports"
            vulns = c.get(f"{url}/vulnerabilities").json()
            assert "PYSEC-2019-217" in {f["advisory_id"] for f in vulns["findings"]}
            assert "hallmark-test-token" in secrets_in(c.get(f"{url}/content").json())
        # A command on a third machine (its own data folder) scans with the set too.
        write_oci_layout(tmp_path / "layout", "v1", [layer], {"config": {"User": "app"}})
        env_c = {**env, "HALLMARK_DATA_DIR": str(tmp_path / "c" / "data")}
        ref = f"oci:{tmp_path / 'layout'}:v1"
        r = subprocess.run(
            [sys.executable, "-m", "hallmark", "scan", ref, "-f", "json", "--scanners", "vuln"],
            env=env_c,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode in (0, 1), r.stderr
        assert "PYSEC-2019-217" in {f["advisory_id"] for f in json.loads(r.stdout)["findings"]}
        # B holds a verified copy of the set and the rules in its own data folder now.
        (fetched,) = [p for p in (data_b / "advisories").iterdir() if not p.name.startswith(".")]
        assert (fetched / "osv" / "PyPI" / "all.zip").read_bytes() == (
            data_a / "advisories" / fetched.name / "osv" / "PyPI" / "all.zip"
        ).read_bytes()
        assert (data_b / "rules" / "secrets" / "site.toml").read_text() == RULE
        engine = create_engine(db_url)
        try:
            with engine.connect() as conn:
                version = conn.execute(
                    select(state_versions.c.version).where(state_versions.c.name == "advisories")
                ).scalar()
        finally:
            engine.dispose()
        assert version == 1
        # The shared files live beside the registry's blobs, never among them (GC cannot take them).
        keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=s3["HALLMARK_STORAGE__BUCKET"])["Contents"]]
        assert any(k.startswith("_shared/sha256/") for k in keys)
    finally:
        a.stop()
        b.stop()


def test_fetch_refuses_a_tampered_file_and_leaves_nothing(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    folder = tmp_path / "set"
    (folder / "osv").mkdir(parents=True)
    (folder / "osv" / "all.zip").write_bytes(b"advisories " * 100)
    (folder / "kev.json").write_text(json.dumps({"vulnerabilities": []}))
    bundle = publish_folder(store, folder)
    fetch_folder(store, bundle, tmp_path / "copy")
    assert (tmp_path / "copy" / "osv" / "all.zip").read_bytes() == b"advisories " * 100
    # Someone (or a broken disk) changes a stored file: the fetch refuses, nothing half-fetched stays.
    victim = store.shared().path(next(d for d in store.shared().iterate() if d != bundle))
    victim.write_bytes(b"tampered")
    with pytest.raises(SharedSetError, match="does not match its digest"):
        fetch_folder(store, bundle, tmp_path / "second")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "copy", "set"]


def test_prune_keeps_what_listed_bundles_use(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, feed in ((old, b"old feed"), (new, b"new feed")):
        folder.mkdir()
        (folder / "kev.json").write_bytes(b"unchanged")  # stored once, used by both
        (folder / "feed.zip").write_bytes(feed)
    old_bundle, new_bundle = publish_folder(store, old), publish_folder(store, new)
    assert shared_sets.prune_shared(store, [new_bundle]) == 2  # the old manifest and the old feed
    fetch_folder(store, new_bundle, tmp_path / "copy")
    assert (tmp_path / "copy" / "kev.json").read_bytes() == b"unchanged"
    with pytest.raises(SharedSetError, match="missing"):
        fetch_folder(store, old_bundle, tmp_path / "gone")


def test_only_a_blob_store_outside_the_data_folder_is_published_to(tmp_path: Path) -> None:
    base = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}
    assert not shared_sets.shared_storage(load_config(environ=base))  # embedded: nobody else reads it
    shared = {**base, "HALLMARK_STORAGE__PATH": str(tmp_path / "nfs")}
    assert shared_sets.shared_storage(load_config(environ=shared))
    s3 = {**base, "HALLMARK_STORAGE__DRIVER": "s3", "HALLMARK_STORAGE__BUCKET": "b"}
    assert shared_sets.shared_storage(load_config(environ=s3))
