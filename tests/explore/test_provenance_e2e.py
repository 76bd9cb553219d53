"""The build side end to end: provenance from the pushed manifest's annotations and from a CI step
(POST /api/v1/provenance), both kept, shown with the workload that runs the image; the images
built from the repository, running or not."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server
from tests.inventory.helpers import as_list, bare_pod
from tests.ocihelp import push_image

SOURCE = "https://github.com/acme/shop"


def until(fn: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"never: {what}")


def test_pushed_and_ci_provenance_with_the_workload(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            notes = {
                "org.opencontainers.image.source": "https://github.com/acme/shop.git",
                "org.opencontainers.image.revision": "a" * 40,
            }
            running = push_image(c, "shop/web", "v2", annotations=notes)
            idle = push_image(c, "shop/web", "v1", files={"old.txt": b"v1"}, annotations=notes)
            r = c.post(
                "/api/v1/provenance",
                json={
                    "image": f"shop/web@{running}",
                    "source_repo": "https://github.com/acme/shop",
                    "revision": "b" * 40,
                    "pipeline": "release",
                    "run_id": "4711",
                    "run_url": "https://github.com/acme/shop/actions/runs/4711",
                    "ci": "github",
                },
            )
            assert r.status_code == 201, r.text
            pod = bare_pod("web", f"{srv.host}/shop/web:v2", f"{srv.host}/shop/web@{running}")
            assert c.post("/api/v1/clusters/prod/inventory", json=as_list(pod)).status_code == 200

            def explore(**params: str) -> list[dict[str, Any]]:
                r = c.get("/api/v1/explore", params=params)
                assert r.status_code == 200, r.text
                rows: list[dict[str, Any]] = r.json()["rows"]
                return rows

            def both_sources() -> list[dict[str, Any]]:
                rows = explore(source_repo="acme/shop")
                return rows if rows and len(rows[0]["provenance"]) == 2 else []

            (row,) = until(both_sources, "the annotation and the CI row")
            assert (row["workload"]["cluster"], row["workload"]["name"], row["image"]["digest"]) == (
                "prod",
                "web",
                running,
            )
            # both claims kept; the CI step's ranks above the annotation (neither is signed)
            assert [(p["kind"], p["commit"]) for p in row["provenance"]] == [("ci", "b" * 40), ("annotation", "a" * 40)]
            assert row["source"]["repository"] == SOURCE and row["source"]["run_url"].endswith("/runs/4711")
            # images built from the repository: running, not running
            assert until(lambda: len(explore(source_repo=SOURCE, view="images")) == 2, "both builds")
            assert [r["image"]["digest"] for r in explore(source_repo=SOURCE, view="images", running="true")] == [
                running
            ]
            assert [r["image"]["digest"] for r in explore(source_repo=SOURCE, view="images", running="false")] == [idle]
    finally:
        srv.stop()
