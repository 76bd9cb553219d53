"""``hallmark catalog promote`` takes REPO:TAG as well as REPO@DIGEST; ``catalog list`` is a table."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.cli.clirun import hallmark
from tests.conftest import Server
from tests.ocihelp import push_image
from tests.pipeline.test_pipeline import wait_for


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    data = tmp_path_factory.mktemp("catalog-cli") / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            digest = push_image(c, "app/web", "v1", files={"app/hello.txt": b"hello"})
            wait_for(c, "app/web", digest)
        yield srv, digest
    finally:
        srv.stop()


def test_promote_by_tag_says_which_digest(site: tuple[Server, str]) -> None:
    srv, digest = site
    r = hallmark(srv.data_dir, "catalog", "promote", "app/web:v1", "--to", "approved", "--reason", "ok", "--force")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"app/web:v1 is app/web@{digest}"
    assert lines[-1].startswith(f"app/web@{digest}: staging -> approved")
    listed = json.loads(hallmark(srv.data_dir, "catalog", "list", "--json").stdout)
    assert [(e["repository"], e["digest"], e["stage"]) for e in listed] == [("app/web", digest, "approved")]
    table = hallmark(srv.data_dir, "catalog", "list").stdout.splitlines()
    assert table[0].split() == ["STAGE", "GRADE", "IMAGE", "OWNER", "DESCRIPTION"]
    assert table[2].split()[0] == "approved" and table[2].split()[2] == f"app/web@{digest}"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("app/web:nope", "error: app/web:nope is not in the registry"),
        ("app/web", "error: 'app/web' must be REPO@DIGEST or REPO:TAG"),
        ("app/web@sha256:xyz", "error: 'app/web@sha256:xyz' must be REPO@DIGEST or REPO:TAG"),
    ],
)
def test_promote_bad_reference_is_one_line(site: tuple[Server, str], ref: str, message: str) -> None:
    r = hallmark(site[0].data_dir, "catalog", "promote", ref, "--to", "approved", "--reason", "x")
    assert r.returncode == 2
    assert r.stderr.strip() == message


def test_promote_by_digest_still_works(site: tuple[Server, str]) -> None:
    srv, digest = site
    r = hallmark(srv.data_dir, "catalog", "promote", f"app/web@{digest}", "--to", "deprecated", "--reason", "old")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith(f"app/web@{digest}: approved -> deprecated")
