"""Push mirrors in process (as a worker runs them) to Debian's ``docker-registry`` with htpasswd basic
auth: approval queues a run, only approved images leave, the result is checked with skopeo on the
remote, an unchanged tag costs one request, referrers follow (tag schema), blobs are mounted across
repositories of the same remote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.mirror.synchelp import PASSWORD, USER, Source, image, push_sbom_referrer
from tests.mirror.synchelp import source as source


def _inspect(src: Source, ref: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"--creds={USER}:{PASSWORD}", f"docker://{src.host}/{ref}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_approval_pushes_approved_tags_to_the_remote_and_nothing_else(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hallmark.app import Hallmark
    from hallmark.catalog.service import CatalogService
    from hallmark.config import load_config
    from hallmark.mirror.definitions import MirrorInputError, MirrorStore, validate
    from hallmark.mirror.sync_jobs import KIND, queue_run, run_now

    # Two local images (brought in by a pull mirror: stored and indexed like pushes), one with an SBOM.
    source.push("src/to-push", {"v1": image({"push": "one"}), "v2": image({"push": "two"})}, tmp_path)
    with source.client() as c:
        head = c.head("/v2/src/to-push/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    sbom = push_sbom_referrer(source, "src/to-push", head.headers["docker-content-digest"])
    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        creds = {"insecure": True, "username": USER, "password": PASSWORD}
        pull = store.create(
            validate(
                {"source": f"{source.host}/src/to-push", "destination": "app/web", "tags": {"include": ["v*"]}, **creds}
            ),
            "t",
        )
        assert run_now(hm, queue_run(hm, pull, "manual", enqueue=False)[0])["copied"] == 2
        d1 = hm.meta.get_manifest("app/web", "v1", False).digest  # type: ignore[union-attr]
        d2 = hm.meta.get_manifest("app/web", "v2", False).digest  # type: ignore[union-attr]

        with pytest.raises(MirrorInputError, match="direction"):
            validate({"direction": "sideways", "remote": f"{source.host}/x", "repository": "app/web"})
        doc = {"direction": "push", "repository": "app/web", "remote": f"{source.host}/pushed/web", **creds}
        push = store.create(validate(doc), "t")
        shown = push.to_json()
        assert (shown["direction"], shown["repository"], shown["remote"]) == (
            "push",
            "app/web",
            f"{source.host}/pushed/web",
        )
        assert "password" not in json.dumps(shown).replace("has_password", "")

        # Approval queues a run (a job, not an inline push); the gates are not what this test is about.
        monkeypatch.setattr(CatalogService, "gates", lambda self, repo, digest, force=False: [])
        hm.pipeline.store.set_image("app/web", d1, status="done")
        assert hm.pipeline.jobs.pending([KIND]) == 0
        CatalogService(hm.pipeline).promote("app/web", d1, "approved", "reviewer", "looks good")
        job = hm.pipeline.jobs.claim("w", [KIND])
        assert job is not None
        result = run_now(hm, int(job.payload["run"]))
        assert result["state"] == "succeeded", result
        assert (result["copied"], result["skipped"], result["failed"]) == (1, 0, 0)  # v2 is staging
        assert result["blobs_copied"] == 2 + 2  # config + layer, and the SBOM's two blobs

        remote = _inspect(source, "pushed/web:v1")
        assert remote.returncode == 0, remote.stderr
        from hallmark.digest import digest_bytes

        assert digest_bytes(remote.stdout.encode()) == d1
        assert _inspect(source, "pushed/web:v2").returncode != 0  # staging never leaves
        assert d2 != d1
        # The SBOM went along, listed under the tag schema (the CNCF registry has no referrers API).
        fallback = _inspect(source, "pushed/web:" + d1.replace(":", "-"))
        assert fallback.returncode == 0, fallback.stderr
        assert [m["digest"] for m in json.loads(fallback.stdout)["manifests"]] == [sbom]

        # Nothing changed: one request per tag.
        again = run_now(hm, queue_run(hm, push, "manual", enqueue=False)[0])
        assert (again["state"], again["skipped"], again["copied"], again["requests"]) == ("succeeded", 1, 0, 1)

        # A second push mirror to the same registry mounts the blobs instead of uploading them.
        other = store.create(
            validate(dict(doc, name="web-copy", remote=f"{source.host}/pushed/web-copy", copy_referrers=False)), "t"
        )
        mounted = run_now(hm, queue_run(hm, other, "manual", enqueue=False)[0])
        assert (mounted["copied"], mounted["blobs_copied"], mounted["blobs_skipped"]) == (1, 0, 2), mounted
        assert _inspect(source, "pushed/web-copy:v1").returncode == 0
    finally:
        hm.close()


def test_push_mirror_cli_add_shows_the_direction(tmp_path: Path) -> None:
    """``hallmark mirror add --push LOCAL HOST/REPO`` stores a push mirror; list says which way."""
    from typer.testing import CliRunner

    from hallmark.cli import app

    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    res = runner.invoke(
        app, ["mirror", "add", "--push", "app/web", "registry.example:5000/team/web", "--json"], env=env
    )
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.output)
    assert (doc["direction"], doc["repository"], doc["remote_registry"], doc["remote_repository"]) == (
        "push",
        "app/web",
        "registry.example:5000",
        "team/web",
    )
    listed = runner.invoke(app, ["mirror", "list"], env=env)
    assert "registry.example:5000/team/web (push)" in listed.output, listed.output


def test_a_push_mirror_changes_its_remote_but_not_its_repository_or_direction(tmp_path: Path) -> None:
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror.definitions import MirrorInputError, MirrorStore, validate

    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        m = store.create(validate({"direction": "push", "repository": "app/web", "remote": "r.example/a/web"}), "t")
        assert m.name == "push-app-web" and m.destination == "app/web"
        moved = store.update(m, {"remote": "r2.example:5000/b/web", "tags": {"include": ["v*"]}})
        assert (moved.source, moved.tags.include) == ("r2.example:5000/b/web", ("v*",))
        assert store.update(moved, {"remote_repository": "c/web"}).source == "r2.example:5000/c/web"
        for patch in ({"repository": "other/web"}, {"direction": "pull"}, {"destination": "other/web"}):
            with pytest.raises(MirrorInputError, match="cannot be changed"):
                store.update(moved, patch)
    finally:
        hm.close()


def test_a_multi_platform_tag_leaves_once_each_platform_it_carries_is_approved(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stages are per platform image: with a platform filter only the kept platform must be approved."""
    from hallmark.app import Hallmark
    from hallmark.catalog.service import CatalogService
    from hallmark.config import load_config
    from hallmark.digest import digest_bytes
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    amd, arm = image({"arch": "amd"}, "amd64"), image({"arch": "arm"}, "arm64")
    source.push("src/multi-push", {"a": amd, "b": arm}, tmp_path, {"a": "linux/amd64", "b": "linux/arm64"})
    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        creds = {"insecure": True, "username": USER, "password": PASSWORD}
        pull = store.create(
            validate({"source": f"{source.host}/src/multi-push", "destination": "app/multi", **creds}), "t"
        )
        assert run_now(hm, queue_run(hm, pull, "manual", enqueue=False)[0])["copied"] == 1
        base = {"direction": "push", "repository": "app/multi", **creds}
        both = store.create(validate(dict(base, name="both", remote=f"{source.host}/pushed/multi")), "t")
        amd_only = store.create(
            validate(dict(base, name="amd", remote=f"{source.host}/pushed/multi-amd", platforms=["linux/amd64"])), "t"
        )
        monkeypatch.setattr(CatalogService, "gates", lambda self, repo, digest, force=False: [])
        for img in (amd, arm):
            hm.pipeline.store.set_image("app/multi", img.digest, status="done")
        CatalogService(hm.pipeline).promote("app/multi", amd.digest, "approved", "reviewer", "ok")
        half = run_now(hm, queue_run(hm, both, "manual", enqueue=False)[0])
        assert (half["copied"], half["skipped"]) == (0, 0)  # arm64 is still staging
        assert _inspect(source, "pushed/multi:multi").returncode != 0
        filtered = run_now(hm, queue_run(hm, amd_only, "manual", enqueue=False)[0])
        assert filtered["copied"] == 1, filtered
        pushed = json.loads(_inspect(source, "pushed/multi-amd:multi").stdout)
        assert [m["digest"] for m in pushed["manifests"]] == [amd.digest]  # the index rewritten to amd64

        CatalogService(hm.pipeline).promote("app/multi", arm.digest, "approved", "reviewer", "ok")
        full = run_now(hm, queue_run(hm, both, "manual", enqueue=False)[0])
        assert full["copied"] == 1, full
        remote = _inspect(source, "pushed/multi:multi")
        local = hm.meta.get_manifest("app/multi", "multi", False)
        assert local is not None and digest_bytes(remote.stdout.encode()) == local.digest
    finally:
        hm.close()
