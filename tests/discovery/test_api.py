"""Search by contents and the advisory endpoint through a real ``hallmark serve`` (SQLite and
PostgreSQL): a pushed image is found by a package it holds, its version and purl, by full text,
and by an advisory (rows written next to the server, as the matcher would), and the CLI agrees."""

from __future__ import annotations

import httpx

from hallmark.app import Hallmark
from hallmark.config import load_config
from hallmark.pipeline.finding_rows import replace_findings
from tests.conftest import Server
from tests.explore.graph import finding
from tests.ocihelp import push_image
from tests.pipeline.test_pipeline import hallmark_cli, image_files, wait_for


def _env(server: Server) -> dict[str, str]:
    env = {"HALLMARK_DATA_DIR": str(server.data_dir)}
    if server.db_url:
        env["HALLMARK_DATABASE_URL"] = server.db_url
    return env


def test_search_by_contents_and_advisory(server: Server, client: httpx.Client) -> None:
    digest = push_image(client, "disc/app", "v1", files=image_files("11", "bullseye"))
    other = push_image(client, "disc/other", "v1", files={"etc/os-release": b"ID=alpine\nVERSION_ID=3.19.1\n"})
    assert wait_for(client, "disc/app", digest, timeout=120)["status"] == "done"
    assert wait_for(client, "disc/other", other, timeout=120)["status"] == "done"

    def names(**params: str) -> list[str]:
        r = client.get("/api/v1/catalog", params=params)
        assert r.status_code == 200, r.text
        return [e["repository"] for e in r.json()["images"] if e["repository"].startswith("disc/")]

    assert names(package="libssl1.1") == ["disc/app"]
    assert names(package="libssl1.1", version="<1.1.1n-0+deb11u4") == ["disc/app"]
    assert names(package="libssl1.1", version=">=1.1.1n-0+deb11u4") == []
    assert names(purl="pkg:pypi/jinja2") == ["disc/app"]
    assert names(q="jinja2") == ["disc/app"]
    assert names(os="alpine") == ["disc/other"]
    entry = client.get("/api/v1/catalog", params={"package": "libssl1.1"}).json()["images"][0]
    assert entry["packages"][0]["version"] == "1.1.1n-0+deb11u3" and entry["stage"] == "staging"
    image = client.get(f"/api/v1/repositories/disc/app/images/{digest}").json()
    assert image["base"] is None and image["advice"] is None  # one layer: built on nothing cataloged
    bad = client.get("/api/v1/catalog", params={"package": "x", "version": "<"})
    assert bad.status_code == 400 and "version range" in bad.text

    hm = Hallmark.open(load_config(environ=_env(server)))
    try:  # what the matcher writes for a finding (the test has no advisory set loaded)
        fs = [finding("DSA-9999-1", "critical", package="openssl", aliases=["CVE-2099-0001"], fixed=["9"], kev=True)]
        replace_findings(hm.meta, "disc/app", digest, {"findings": fs})
    finally:
        hm.close()
    assert names(advisory="CVE-2099-0001") == ["disc/app"]
    assert names(kev="true") == ["disc/app"]
    doc = client.get("/api/v1/advisories/CVE-2099-0001").json()
    assert doc["ids"] == ["CVE-2099-0001", "DSA-9999-1"] and doc["kev"] is True and doc["affected"] == 1
    (img,) = doc["images"]
    assert (img["repository"], img["digest"], img["tags"], img["stage"]) == ("disc/app", digest, ["v1"], "staging")
    assert img["findings"][0]["package"] == "openssl" and doc["workloads"] == [] and doc["vex"] == []
    assert client.get("/api/v1/advisories/CVE-1999-0000").status_code == 404

    r = hallmark_cli(server, "catalog", "search", "--package", "libssl1.1", "--version", "<1.1.1o")
    assert r.returncode == 0, r.stderr
    assert f"disc/app@{digest}" in r.stdout and "libssl1.1 1.1.1n-0+deb11u3" in r.stdout
    r = hallmark_cli(server, "catalog", "search", "--kev", "maybe")
    assert r.returncode == 2 and "kev must be true or false" in r.stderr
