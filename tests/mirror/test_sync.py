"""Repository mirroring against real parts: Debian's ``docker-registry`` (the CNCF registry) with htpasswd
basic auth as the source, images pushed into it with skopeo, a real ``hallmark serve`` as the destination."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from tests.conftest import Server, free_port
from tests.index.imagebuilder import Image, Layer, build_image, sha256, write_layout
from tests.pipeline.test_pipeline import wait_for

USER, PASSWORD = "mirror-user", "Src-Pass-31337"
SBOM_TYPE = "application/spdx+json"
SECRET_ENV = "DATABASE_URL=postgres://appuser:Zx9vQ2mR7pLk4sT8@db.internal:5432/app\n"
TERMINAL = ("succeeded", "partial", "failed", "retrying")


@dataclass
class Source:
    host: str
    root: Path
    proc: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://{self.host}", auth=(USER, PASSWORD), timeout=30)

    def push(self, repo: str, images: dict[str, Image], work: Path, index: dict[str, str] | None = None) -> None:
        """skopeo copy of an OCI layout (one image per tag, or one index tagged ``multi``)."""
        layout = work / f"layout-{repo.replace('/', '-')}-{time.monotonic_ns()}"
        write_layout(str(layout), images, index)
        for tag in ["multi"] if index else list(images):
            r = subprocess.run(
                [
                    "skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false",
                    f"--dest-creds={USER}:{PASSWORD}", f"oci:{layout}:{tag}", f"docker://{self.host}/{repo}:{tag}",
                ],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr

    def blob_file(self, digest: str) -> Path:
        hexpart = digest.split(":", 1)[1]
        return self.root / "store" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"


def start_source(root: Path) -> Source:
    port = free_port()
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'store'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: mirror-test}}\n"
        f"auth: {{htpasswd: {{realm: source, path: {htpasswd}}}}}\n"
    )
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 401:
                return Source(f"127.0.0.1:{port}", root, proc)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError((root / "registry.log").read_text())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    src = start_source(tmp_path_factory.mktemp("source"))
    try:
        yield src
    finally:
        src.proc.terminate()
        src.proc.wait(10)


@pytest.fixture(scope="module")
def hallmark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("dest") / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        yield srv
    finally:
        srv.stop()


def image(files: dict[str, bytes | str], arch: str = "amd64") -> Image:
    layer = Layer()
    for path, data in files.items():
        layer.file(path, data)
    return build_image([(layer.tar_bytes(), "gzip")], arch=arch)


def push_sbom_referrer(src: Source, repo: str, subject: str) -> str:
    """An SPDX artifact whose ``subject`` is ``subject``, plus the ``sha256-<hex>`` index a client
    writes for a registry without the referrers API (the CNCF registry 2.8)."""
    body = b'{"spdxVersion": "SPDX-2.3", "name": "mirrored"}'
    empty = b"{}"
    with src.client() as c:
        for blob in (body, empty):
            r = c.post(f"/v2/{repo}/blobs/uploads/")
            assert r.status_code == 202, r.text
            r = c.put(httpx.URL(r.headers["Location"]).copy_merge_params({"digest": sha256(blob)}), content=blob)
            assert r.status_code == 201, r.text
        subject_raw = c.get(
            f"/v2/{repo}/manifests/{subject}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        ).content
        artifact = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": SBOM_TYPE,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
                "layers": [{"mediaType": SBOM_TYPE, "digest": sha256(body), "size": len(body)}],
                "subject": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": subject,
                    "size": len(subject_raw),
                },
            }
        ).encode()
        ctype = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        r = c.put(f"/v2/{repo}/manifests/{sha256(artifact)}", content=artifact, headers=ctype)
        assert r.status_code == 201, r.text
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": sha256(artifact),
                        "size": len(artifact),
                        "artifactType": SBOM_TYPE,
                    }
                ],
            }
        ).encode()
        r = c.put(
            f"/v2/{repo}/manifests/{subject.replace(':', '-')}",
            content=index,
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        )
        assert r.status_code == 201, r.text
    return sha256(artifact)


def run_and_wait(c: httpx.Client, mirror_id: int, timeout: float = 120) -> dict[str, Any]:
    r = c.post(f"/api/v1/mirrors/{mirror_id}/run")
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = c.get(f"/api/v1/mirrors/{mirror_id}/runs", params={"tags": "1"}).json()["runs"]
        run = next(x for x in runs if x["id"] == run_id)
        if run["state"] in TERMINAL:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run never finished: {run}")


def test_mirror_copies_filtered_tags_referrers_and_only_what_changed(
    source: Source, hallmark: Server, tmp_path: Path
) -> None:
    v10 = image({"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "app/.env": SECRET_ENV})
    source.push(
        "src/app",
        {
            "1.0": v10,
            "1.1": image({"app": "1.1"}),
            "2.0": image({"app": "2.0"}),
            "2.0-rc1": image({"app": "2.0-rc1"}),
            "dev": image({"app": "dev"}),
        },
        tmp_path,
    )
    source.push(
        "src/app",
        {"a": image({"m": "amd"}), "b": image({"m": "arm"}, "arm64")},
        tmp_path,
        {"a": "linux/amd64", "b": "linux/arm64"},
    )
    sbom = push_sbom_referrer(source, "src/app", v10.digest)
    with httpx.Client(base_url=hallmark.url, timeout=30) as c:
        r = c.post(
            "/api/v1/mirrors",
            json={
                "name": "app",
                "source": f"{source.host}/src/app",
                "destination": "mirrored/app",
                "insecure": True,
                "username": USER,
                "password": PASSWORD,
                "tags": {"include": ["1.*", "multi", r"regex:2\.[0-9]+"], "exclude": ["*-rc*"]},
                "platforms": ["linux/amd64"],
                "schedule": {"interval_seconds": 3600},
            },
        )
        assert r.status_code == 201, r.text
        m = r.json()
        assert m["has_password"] is True and PASSWORD not in r.text
        assert (
            PASSWORD not in c.get("/api/v1/mirrors").text and PASSWORD not in c.get(f"/api/v1/mirrors/{m['id']}").text
        )

        run = run_and_wait(c, m["id"])
        assert run["state"] == "succeeded", run
        assert {t["tag"]: t["state"] for t in run["tags"]} == {
            "1.0": "copied",
            "1.1": "copied",
            "2.0": "copied",
            "multi": "copied",
        }
        assert run["copied"] == 4 and run["failed"] == 0 and run["bytes"] > 0 and run["blobs_copied"] > 0
        tags = c.get("/v2/mirrored/app/tags/list").json()["tags"]
        assert sorted(tags) == ["1.0", "1.1", "2.0", "multi"]
        # The index keeps the wanted platform only (a rewritten index: its own digest).
        idx = c.get("/v2/mirrored/app/manifests/multi", headers={"Accept": "application/vnd.oci.image.index.v1+json"})
        assert [x["platform"]["architecture"] for x in idx.json()["manifests"]] == ["amd64"]
        # The referrer (an SBOM pushed with subject, found through the sha256-<hex> tag schema) came along.
        refs = c.get(f"/v2/mirrored/app/referrers/{v10.digest}").json()["manifests"]
        assert sbom in [x["digest"] for x in refs]
        # Pushed as the pipeline sees a push: indexed, matched, with findings.
        img = wait_for(c, "mirrored/app", v10.digest, timeout=120)
        assert img["status"] == "done", img
        assert img["distro"]["id"] == "debian"
        report = c.get(f"/api/v1/repositories/mirrored/app/images/{v10.digest}/reports/content").json()
        assert any(f["kind"] == "secret" for f in report["findings"]), report

        # Second run: nothing changed, nothing fetched.
        again = run_and_wait(c, m["id"])
        assert again["state"] == "succeeded", again
        assert (again["copied"], again["skipped"], again["blobs_copied"], again["bytes"]) == (0, 4, 0, 0)

        # A new tag upstream and a moved one: only those are copied.
        source.push("src/app", {"1.2": image({"app": "1.2"}), "1.1": image({"app": "1.1 rebuilt"})}, tmp_path)
        third = run_and_wait(c, m["id"])
        states = {t["tag"]: t["state"] for t in third["tags"]}
        assert states == {"1.0": "skipped", "1.1": "copied", "1.2": "copied", "2.0": "skipped", "multi": "skipped"}

        listing = c.get("/api/v1/mirrors").json()["mirrors"]
        assert [x["name"] for x in listing] == ["app"] and listing[0]["last_run"]["id"] == third["id"]
        assert c.delete(f"/api/v1/mirrors/{m['id']}").status_code == 204
        assert c.get(f"/api/v1/mirrors/{m['id']}").status_code == 404
    assert PASSWORD not in (hallmark.data_dir.parent / f"server-{hallmark.port}.log").read_text()


def test_bad_blobs_fail_their_tag_only_and_store_nothing(source: Source, hallmark: Server, tmp_path: Path) -> None:
    good, mismatch, short = image({"ok": "fine"}), image({"x": "will be corrupted " * 50}), image({"y": "cut " * 400})
    source.push("src/bad", {"good": good, "mismatch": mismatch, "short": short}, tmp_path)
    bad_mismatch, bad_short = source.blob_file(mismatch.layer_digests[0]), source.blob_file(short.layer_digests[0])
    data = bad_mismatch.read_bytes()
    bad_mismatch.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # same size, other bytes
    bad_short.write_bytes(bad_short.read_bytes()[:-20])  # truncated
    with httpx.Client(base_url=hallmark.url, timeout=30) as c:
        body = {"source": f"{source.host}/src/bad", "destination": "mirrored/bad", "insecure": True}
        r = c.post("/api/v1/mirrors", json=dict(body, username=USER, password=PASSWORD))
        assert r.status_code == 201, r.text
        run = run_and_wait(c, r.json()["id"])
        tags = {t["tag"]: t for t in run["tags"]}
        assert tags["good"]["state"] == "copied"
        assert tags["mismatch"]["state"] == "failed" and "digest mismatch" in tags["mismatch"]["error"]
        assert tags["short"]["state"] == "failed" and "truncated" in tags["short"]["error"]
        assert run["state"] == "retrying" and run["next_retry_at"] and run["failed"] == 2
        assert sorted(c.get("/v2/mirrored/bad/tags/list").json()["tags"]) == ["good"]
        for digest in (mismatch.layer_digests[0], short.layer_digests[0]):
            assert c.head(f"/v2/mirrored/bad/blobs/{digest}").status_code == 404
        # Without credentials the source refuses: the run says why.
        r = c.post("/api/v1/mirrors", json=dict(body, name="nocreds"))
        run = run_and_wait(c, r.json()["id"])
        assert run["state"] == "retrying" and "authentication required" in run["error"]
        # Bad definitions are refused with a reason.
        for bad, why in (
            ({"source": "h/x", "destination": "Bad Name"}, "destination"),
            ({"source": "h/x", "destination": "d/x", "schedule": {"cron": "not cron"}}, "cron"),
            ({"source": "h/x", "destination": "d/x", "tags": {"include": ["regex:("]}}, "regular expression"),
            ({"source": "h/x", "destination": "d/x", "schedule": {"interval_seconds": 5}}, "interval_seconds"),
        ):
            r = c.post("/api/v1/mirrors", json=bad)
            assert r.status_code == 400 and why in r.text, r.text


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_killed_run_resumes_and_failures_are_queued_with_backoff(
    db: str, source: Source, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """In process: a run interrupted after its first tag finishes the rest when run again."""
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror import sync
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import KIND, queue_run, run_now

    source.push(f"src/resume-{db}", {f"t{i}": image({"n": db + str(i)}) for i in range(3)}, tmp_path)
    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}
    if db == "postgres":
        env["HALLMARK_DATABASE_URL"] = request.getfixturevalue("postgres").create_db(f"m{free_port()}")
    hm = Hallmark.open(load_config(environ=env))
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        m = store.create(
            validate(
                {"source": f"{source.host}/src/resume-{db}", "destination": "r/x", "insecure": True,
                 "username": USER, "password": PASSWORD}
            ),
            "test",
        )  # fmt: skip
        run_id, _ = queue_run(hm, m, "manual", enqueue=False)
        original = sync.copy_tag
        calls = []

        def dies_on_second(copier: Any, tag: str, all_tags: set[str]) -> Any:
            calls.append(tag)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the worker is killed mid-run
            return original(copier, tag, all_tags)

        sync.copy_tag = dies_on_second  # type: ignore[assignment]
        try:
            with pytest.raises(KeyboardInterrupt):
                run_now(hm, run_id)
        finally:
            sync.copy_tag = original  # type: ignore[assignment]
        half = store.run(run_id)
        assert half is not None and half["state"] == "running"
        assert [t["state"] for t in half["tags"]] == ["copied", "pending", "pending"]
        result = run_now(hm, run_id)  # the job claimed again after its lease expired
        assert result["state"] == "succeeded" and result["copied"] == 3
        done = store.run(run_id)
        assert done is not None and [t["attempts"] for t in done["tags"]] == [1, 1, 1]
        # Nothing changed: one request per tag, plus the tag list and one referrers API probe (404 here).
        again = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        assert (again["skipped"], again["copied"], again["requests"]) == (3, 0, 1 + 3 + 1)

        # A failing run is queued again, later (backoff), for the tags that failed.
        m2 = store.create(
            validate({"source": f"{source.host}/src/nowhere", "destination": "r/y", "insecure": True}), "t"
        )
        run2, _ = queue_run(hm, m2, "manual", enqueue=False)
        failed = run_now(hm, run2)
        assert failed["state"] == "retrying" and "src/nowhere" in failed["error"]
        assert hm.pipeline.jobs.pending([KIND]) == 1  # queued again...
        assert hm.pipeline.jobs.claim("w", [KIND]) is None  # ...after its backoff
    finally:
        hm.close()


def test_the_mirror_pushes_as_its_robot_and_only_where_it_may(source: Source, tmp_path: Path) -> None:
    """Access control on: stored tags and audit entries name the robot; a robot without push on the
    destination copies nothing; blobs of repositories the robot cannot read are fetched, not linked."""
    from sqlalchemy import select

    from hallmark.access.service import AccessService
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.lifecycle.tables import tag_history
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    img = image({"robot": "made"})
    source.push("src/robot", {"v1": img}, tmp_path)
    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    try:
        assert hm.config.access.enabled
        admin = AccessService.for_metadata(hm.config, hm.meta)  # hm.access stays unset, as in `hallmark worker`
        admin.create_robot("admin", "mirror-bot", ["repository:mirrors/*:pull,push"])
        # The same layer already stored in a repository the robot cannot read.
        private = hm.blobs.put(img.blobs[img.layer_digests[0]])
        hm.meta.link_blob("private/x", private[0], private[1])
        store = MirrorStore(hm.meta, hm.config.data_path)
        base = {"source": f"{source.host}/src/robot", "insecure": True, "username": USER, "password": PASSWORD}
        refused = store.create(validate(dict(base, destination="elsewhere/x", robot="mirror-bot")), "admin")
        result = run_now(hm, queue_run(hm, refused, "manual", enqueue=False)[0])
        assert result["state"] == "failed" and "may not push to elsewhere/x" in result["error"]
        assert hm.meta.get_manifest("elsewhere/x", "v1", False) is None

        m = store.create(validate(dict(base, destination="mirrors/x", robot="mirror-bot")), "admin")
        result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        assert result["state"] == "succeeded" and result["copied"] == 1, result
        assert result["blobs_copied"] == 2 and result["blobs_skipped"] == 0  # the private copy was not linked
        with hm.meta.engine.connect() as conn:
            actors = conn.execute(select(tag_history.c.actor).where(tag_history.c.repo_name == "mirrors/x")).scalars()
            assert list(actors) == ["mirror-bot"]
        pushes = admin.audit.query(action="push", repo="mirrors/x")
        assert pushes and {p["actor"] for p in pushes} == {"mirror-bot"}
    finally:
        hm.close()


def test_a_slow_source_and_an_oversize_manifest_are_errors_not_hangs(source: Source, tmp_path: Path) -> None:
    import socket

    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    def layered(tag: str) -> Image:  # ten layers: a manifest over 1024 bytes
        return build_image([(Layer().file(f"f{i}", tag).tar_bytes(), "gzip") for i in range(10)])

    source.push("src/big", {"v1": layered("1"), "v2": layered("2")}, tmp_path)
    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data"), "HALLMARK_REGISTRY__MAX_MANIFEST_BYTES": "1024"}
    hm = Hallmark.open(load_config(environ=env))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        slow = store.create(
            validate({"source": f"127.0.0.1:{silent.getsockname()[1]}/x", "destination": "s/x", "insecure": True,
                      "timeout_seconds": 1}),
            "t",
        )  # fmt: skip
        result = run_now(hm, queue_run(hm, slow, "manual", enqueue=False)[0])
        assert result["state"] == "retrying" and "timed out" in result["error"].lower(), result
        big = store.create(
            validate({"source": f"{source.host}/src/big", "destination": "b/x", "insecure": True,
                      "username": USER, "password": PASSWORD}),
            "t",
        )  # fmt: skip
        result = run_now(hm, queue_run(hm, big, "manual", enqueue=False)[0])
        run = store.run(result["run"])
        assert run is not None and [t["state"] for t in run["tags"]] == ["failed", "failed"]
        assert all("larger than 1024 bytes" in t["error"] for t in run["tags"])
        assert hm.meta.get_manifest("b/x", "v1", False) is None
    finally:
        silent.close()
        hm.close()


def test_cli_add_and_run_here_or_on_a_worker(source: Source, tmp_path: Path) -> None:
    import sys

    source.push("src/cli", {"1.0": image({"c": "1"}), "nightly": image({"c": "n"})}, tmp_path)
    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", "HALLMARK_ACCESS__ENABLED": "false"}

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hallmark", "mirror", *args],
            env=env, input=stdin, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    r = cli(
        "add", f"{source.host}/src/cli", "cli/app", "--name", "cli-app", "--include", "1.*", "--cron", "0 3 * * *",
        "--insecure", "-u", USER, "--password-stdin", "--json", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["has_password"] and m["schedule"]["cron"] == "0 3 * * *" and PASSWORD not in r.stdout
    r = cli("run", "cli-app", "--queue")  # for any worker: `hallmark worker` takes it
    assert r.returncode == 0 and "queued" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "hallmark", "worker", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    r = cli("run", "cli-app")  # the worker copied 1.0: nothing left to copy
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipped  1.0" in r.stdout and "nightly" not in r.stdout and "succeeded" in r.stdout


def test_tag_filters_and_schedules() -> None:
    import datetime as dt

    from hallmark.mirror.definitions import MirrorInputError, TagFilter, next_run, validate

    f = TagFilter.parse(["1.*", r"regex:v\d+"], ["*-rc*", "regex:.*-debug"])
    assert [t for t in ["1.0", "1.0-rc1", "v2", "v2x", "1.1-debug", "latest"] if f.wants(t)] == ["1.0", "v2"]
    assert TagFilter.parse(None, ["dev"]).wants("latest") and not TagFilter.parse(None, ["dev"]).wants("dev")
    at = dt.datetime(2026, 12, 6, 2, 30, tzinfo=dt.UTC)
    assert next_run(None, "0 3 * * *", at) == dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
    assert next_run(3600, None, at) == at + dt.timedelta(hours=1)
    assert next_run(None, None, at) is None
    with pytest.raises(MirrorInputError, match="not both"):
        validate({"source": "h/x", "destination": "d/x", "interval_seconds": 60, "cron": "* * * * *"})
    hub = validate({"source": "docker.io/debian", "destination": "d/x"})
    assert (hub["source_registry"], hub["source_repository"], hub["insecure"]) == (
        "registry-1.docker.io",
        "library/debian",
        False,
    )
    assert validate({"source": "http://127.0.0.1:5000/a/b", "destination": "d/x"})["insecure"] is True
    with pytest.raises(MirrorInputError, match="needs a username"):
        validate({"source": "h/x", "destination": "d/x", "password": "p"})


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_due_mirrors_are_queued_once(db: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The periodic job queues a run of each due mirror; a second pass (another replica) queues nothing."""
    import datetime as dt

    from sqlalchemy import update

    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import KIND, queue_due
    from hallmark.mirror.tables import mirrors

    env = {"HALLMARK_DATA_DIR": str(tmp_path / "data")}
    if db == "postgres":
        env["HALLMARK_DATABASE_URL"] = request.getfixturevalue("postgres").create_db(f"m{free_port()}")
    hm = Hallmark.open(load_config(environ=env))
    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        due = store.create(validate({"source": "h.example/x", "destination": "d/x", "interval_seconds": 600}), "t")
        store.create(validate({"source": "h.example/y", "destination": "d/y"}), "t")  # manual only
        now = dt.datetime.now(dt.UTC)
        assert queue_due(hm, now)["queued"] == []  # not due yet
        with hm.meta.transaction() as conn:
            conn.execute(
                update(mirrors).where(mirrors.c.id == due.id).values(next_run_at=now - dt.timedelta(seconds=1))
            )
        assert [q["mirror"] for q in queue_due(hm, now)["queued"]] == ["d-x"]
        assert queue_due(hm, now)["queued"] == []
        assert hm.pipeline.jobs.pending([KIND]) == 1
        moved = store.get(due.id)
        assert moved is not None and moved.next_run_at is not None
        assert moved.next_run_at.replace(tzinfo=dt.UTC) >= now + dt.timedelta(seconds=599)
    finally:
        hm.close()


def test_api_needs_admin_on_the_destination(tmp_path: Path) -> None:
    """Access control on: creating needs admin on the destination; other mirrors do not exist for a caller."""
    from hallmark.access.service import AccessService
    from hallmark.config import load_config
    from hallmark.metadata.db import make_engine, migrate

    data = tmp_path / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    users = {"root": "root-Secret-123456", "alice": "alice-Secret-654321", "bob": "bob-Secret-987654"}
    svc.add_user("test", "root", users["root"], ["administrator"])
    svc.add_user("test", "alice", users["alice"])
    svc.add_user("test", "bob", users["bob"])
    svc.grant("test", "principal", "alice", "namespace", "team-a", "admin")
    svc.grant("test", "principal", "bob", "namespace", "team-a", "write")
    svc.audit.flush()
    engine.dispose()
    srv = Server(data, access=True).start()
    body = {"source": "registry.example/x", "destination": "team-a/x", "username": "u", "password": "p-Secret-42"}
    try:

        def as_(user: str | None) -> httpx.Client:
            return httpx.Client(base_url=srv.url, auth=(user, users[user]) if user else None, timeout=30)

        with as_("bob") as bob, as_("alice") as alice, as_("root") as root, as_(None) as anon:
            assert bob.post("/api/v1/mirrors", json=body).status_code == 403
            assert anon.post("/api/v1/mirrors", json=body).status_code == 401
            r = alice.post("/api/v1/mirrors", json=body)
            assert r.status_code == 201, r.text
            mid = r.json()["id"]
            assert [m["id"] for m in alice.get("/api/v1/mirrors").json()["mirrors"]] == [mid]
            assert [m["id"] for m in root.get("/api/v1/mirrors").json()["mirrors"]] == [mid]
            assert bob.get("/api/v1/mirrors").json()["mirrors"] == []
            assert anon.get("/api/v1/mirrors").status_code == 401
            for method, path in (("GET", ""), ("GET", "/runs"), ("POST", "/run"), ("DELETE", "")):
                assert bob.request(method, f"/api/v1/mirrors/{mid}{path}").status_code == 404
            assert alice.get(f"/api/v1/mirrors/{mid}/runs").status_code == 200
            audit = root.get("/api/v1/audit", params={"action": "mirror.create"}).json()
            entries = audit["entries"] if isinstance(audit, dict) else audit
            assert [e["actor"] for e in entries] == ["alice"]
            assert alice.delete(f"/api/v1/mirrors/{mid}").status_code == 204
        assert "p-Secret-42" not in (srv.data_dir.parent / f"server-{srv.port}.log").read_text()
    finally:
        srv.stop()


def test_a_tag_moved_upstream_during_the_run_stores_one_consistent_version(source: Source, tmp_path: Path) -> None:
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.mirror import sync
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now

    first, second = image({"v": "first"}), image({"v": "second"})
    source.push("src/moving", {"v1": first}, tmp_path)
    hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
    original = sync.Source.digest_of

    def then_moved(self: sync.Source, tag: str) -> str:
        digest = original(self, tag)
        source.push("src/moving", {"v1": second}, tmp_path)  # the tag moves right after it was read
        return digest

    try:
        store = MirrorStore(hm.meta, hm.config.data_path)
        m = store.create(
            validate({"source": f"{source.host}/src/moving", "destination": "mv/x", "insecure": True,
                      "username": USER, "password": PASSWORD, "copy_referrers": False}),
            "t",
        )  # fmt: skip
        sync.Source.digest_of = then_moved  # type: ignore[method-assign]
        try:
            result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        finally:
            sync.Source.digest_of = original  # type: ignore[method-assign]
        assert result["state"] == "succeeded" and result["copied"] == 1
        stored = hm.meta.get_manifest("mv/x", "v1", False)
        assert stored is not None and stored.digest == first.digest and stored.content == first.manifest
        result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])  # the next run sees the move
        stored = hm.meta.get_manifest("mv/x", "v1", False)
        assert result["copied"] == 1 and stored is not None and stored.digest == second.digest
    finally:
        hm.close()


def test_mirror_from_a_hallmark_with_bearer_tokens_and_the_referrers_api(tmp_path: Path) -> None:
    """The source is a second Hallmark (access control on: Bearer-token challenge, referrers API)."""
    from hallmark.access.service import AccessService
    from hallmark.app import Hallmark
    from hallmark.config import load_config
    from hallmark.metadata.db import make_engine, migrate
    from hallmark.mirror.definitions import MirrorStore, validate
    from hallmark.mirror.sync_jobs import queue_run, run_now
    from tests.ocihelp import push_blob, push_manifest

    data = tmp_path / "src-data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    svc.add_user("test", "carol", "carol-Secret-123456")
    svc.grant("test", "principal", "carol", "namespace", "team", "write")
    svc.audit.flush()
    engine.dispose()
    src = Server(data, env={"HALLMARK_PIPELINE__ENABLED": "false"}, access=True).start()
    hm = None
    try:
        img = image({"from": "hallmark"})
        body = b'{"spdxVersion": "SPDX-2.3"}'
        with httpx.Client(base_url=src.url, auth=("carol", "carol-Secret-123456"), timeout=30) as c:
            for blob in img.blobs.values():
                if blob != img.manifest:
                    push_blob(c, "team/app", blob)
            assert push_manifest(c, "team/app", "v1", img.manifest).status_code == 201
            push_blob(c, "team/app", body)
            push_blob(c, "team/app", b"{}")
            artifact = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": SBOM_TYPE,
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
                    "layers": [{"mediaType": SBOM_TYPE, "digest": sha256(body), "size": len(body)}],
                    "subject": {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": img.digest,
                        "size": len(img.manifest),
                    },
                }
            ).encode()
            assert push_manifest(c, "team/app", sha256(artifact), artifact).status_code == 201
        hm = Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path / "data")}))
        store = MirrorStore(hm.meta, hm.config.data_path)
        base = {"source": f"http://{src.host}/team/app", "destination": "copy/app"}
        m = store.create(validate(dict(base, username="carol", password="carol-Secret-123456")), "t")
        result = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        assert result["state"] == "succeeded" and result["copied"] == 1, result
        stored = hm.meta.get_manifest("copy/app", "v1", False)
        assert stored is not None and stored.digest == img.digest
        refs = hm.meta.referrers("copy/app", img.digest, None, 100, None)
        assert [r.digest for r in refs] == [sha256(artifact)]
        again = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        assert (again["skipped"], again["requests"]) == (1, 1 + 1 + 1)  # tag list, HEAD, referrers
        # A data folder whose mirror key changed cannot open the password: said so, not retried.
        key = hm.config.data_path / "mirror" / "secret-key"
        saved = key.read_text()
        key.write_text(base64.b64encode(bytes(32)).decode())
        unsealed = run_now(hm, queue_run(hm, m, "manual", enqueue=False)[0])
        key.write_text(saved)
        assert unsealed["state"] == "failed" and "cannot be unsealed" in unsealed["error"]
        # Wrong password: the token endpoint refuses, the run says so.
        bad = store.create(validate(dict(base, destination="copy/bad", username="carol", password="nope")), "t")
        failed = run_now(hm, queue_run(hm, bad, "manual", enqueue=False)[0])
        assert "refused the credentials" in failed["error"] and "nope" not in failed["error"]
    finally:
        if hm is not None:
            hm.close()
        src.stop()
