"""End of life: endoflife.date data as a `db update` feed, matching images to release cycles,
statuses moving with time, and the catalog policy (auto-deprecation, auto-retirement)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update as sql_update

from hallmark.app import Hallmark
from hallmark.catalog.store import CatalogStore
from hallmark.catalog.tables import catalog_entries
from hallmark.config import load_config
from hallmark.index import IndexResult
from hallmark.lifecycle import jobs  # noqa: F401  (registers the periodic jobs)
from hallmark.lifecycle.eol import (
    evaluate,
    find_cycle,
    java_version,
    lifecycle_of,
    refresh_all,
    status,
    store_many,
    subjects,
    view,
)
from hallmark.lifecycle.eol_data import (
    FOLDER,
    PRODUCTS,
    Cycle,
    Product,
    active_products,
    load_products,
    normalise,
)
from hallmark.lifecycle.scheduler import Scheduler
from hallmark.metadata.store import utcnow
from hallmark.model import Distro, Package
from tests.conftest import SHARED_DATA, free_port

pytestmark = pytest.mark.skipif(
    not (SHARED_DATA / "endoflife" / "products").is_dir(), reason="shared end-of-life snapshot not present"
)

MIRRORED = ("debian", "alpine-linux", "python", "nodejs")


@pytest.fixture(scope="module")
def products() -> dict[str, Product]:
    return load_products(SHARED_DATA)  # the same loader `db update` validates a set with


def api_layout(product: str) -> list[dict[str, Any]]:
    """A product file of the snapshot as the live API (``/api/<product>.json``) serves it."""
    doc = json.loads((SHARED_DATA / FOLDER / f"{product}.json").read_text())
    return [
        {
            "cycle": r["releaseCycle"],
            "codename": r.get("codename"),
            "releaseDate": r.get("releaseDate"),
            "eol": r.get("eol", False),
            "extendedSupport": r.get("eoes", False),
            "support": r.get("eoas", False),
            "lts": r.get("lts", False),
            "latest": r.get("latest"),
            "latestReleaseDate": r.get("latestReleaseDate"),
            "link": r.get("link"),
        }
        for r in doc["releases"]
    ]


def by_product(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["product"], e["cycle"]): e for e in doc["entries"]}


# -- the data ---------------------------------------------------------------------------------------


def test_every_matched_product_is_in_the_snapshot_and_both_layouts_read_alike(products: dict[str, Product]) -> None:
    assert set(products) == set(PRODUCTS)
    for name in MIRRORED:
        assert normalise(name, api_layout(name)).cycles == products[name].cycles, name
    debian12 = products["debian"].cycle("12")
    assert debian12 == Cycle(
        cycle="12",
        eol=dt.date(2026, 7, 11),
        extended_support=dt.date(2028, 6, 30),
        codename="Bookworm",
        release_date=dt.date(2023, 6, 10),
        latest="12.15",
    )
    go = products["go"].cycle("1.27")
    assert go is not None and go.eol is False  # no end announced
    with pytest.raises(ValueError, match="debian 12 eol"):
        normalise("debian", [{"cycle": "12", "eol": "next summer"}])
    with pytest.raises(ValueError, match="neither"):
        normalise("debian", {"something": "else"})


def test_versions_find_their_cycle(products: dict[str, Product]) -> None:
    def cycle(product: str, version: str) -> str | None:
        hit = find_cycle(products[product], version)
        return hit.cycle if hit else None

    assert cycle("python", "3.11.2") == "3.11"
    assert cycle("python", "3.1.4") == "3.1" and cycle("python", "3.10.1") == "3.10"
    assert cycle("nodejs", "20.11.0") == "20"
    assert cycle("alpine-linux", "3.19.1") == "3.19"
    assert cycle("debian", "trixie") == "13"  # testing images carry a codename and no VERSION_ID
    assert cycle("dotnet", "8.0.1") == "8" and cycle("dotnet", "3.1.32") == "3.1"
    assert cycle("python", "4.0") is None
    assert [java_version(v) for v in ("1.8.0_392", "jdk8u402-b06", "jdk-17.0.10+7", "21-ea")] == [
        "8",
        "8",
        "17.0.10",
        "21",
    ]


# -- matching ---------------------------------------------------------------------------------------


def test_debian_image_with_python_node_django_and_go(products: dict[str, Product]) -> None:
    inv = IndexResult(
        "done",
        distro=Distro("debian", "12", "bookworm"),
        packages=[
            Package("python3.11", "3.11.2-6+deb12u1", "Debian", type="os"),
            Package("python3.11-minimal", "3.11.2-6+deb12u1", "Debian", type="os"),
            Package("nodejs", "18.19.0+dfsg-6~deb12u2", "Debian", type="os"),
            Package("php-common", "2:93", "Debian", type="os"),  # a helper package, not PHP itself
            Package("libc6", "2.36-9+deb12u4", "Debian", type="os"),
            Package("django", "4.2.7", "PyPI", paths=["usr/local/lib/python3.12/site-packages/Django-4.2.7.dist-info"]),
            Package("stdlib", "1.21.5", "Go", type="stdlib", paths=["usr/local/bin/app"]),
        ],
    )
    found = subjects(inv, {"NODE_VERSION": "20.11.0", "PATH": "/usr/bin"})
    doc = evaluate(found, products, dt.date(2026, 8, 1), 90)
    entries = by_product(doc)
    assert set(entries) == {
        ("debian", "12"),
        ("python", "3.11"),
        ("python", "3.12"),  # the site-packages folder of a second interpreter
        ("nodejs", "18"),
        ("nodejs", "20"),  # the official image's NODE_VERSION (a node built from source has no package)
        ("django", "4.2"),
        ("go", "1.21"),
    }
    deb = entries[("debian", "12")]
    assert (deb["eol"], deb["extended_support"], deb["status"], deb["kind"]) == (
        "2026-07-11",
        "2028-06-30",
        "eol",
        "os",
    )
    assert deb["from"] == [{"type": "os-release", "id": "debian", "version_id": "12", "codename": "bookworm"}]
    py = entries[("python", "3.11")]
    assert (py["eol"], py["extended_support"], py["status"]) == ("2027-10-31", None, "supported")
    assert [f["name"] for f in py["from"]] == ["python3.11", "python3.11-minimal"]
    node = entries[("nodejs", "18")]
    assert (node["eol"], node["status"], node["from"][0]["name"]) == ("2025-04-30", "eol", "nodejs")
    assert entries[("nodejs", "20")]["from"] == [{"type": "image-env", "name": "NODE_VERSION", "value": "20.11.0"}]
    assert entries[("django", "4.2")]["eol"] == "2026-04-07"
    assert entries[("go", "1.21")]["from"][0]["type"] == "go-binary"
    assert doc["status"] == "eol" and doc["os"] == "debian 12" and doc["unmatched"] == []
    # The order of the table: OS, runtimes, frameworks.
    assert doc["entries"][0]["kind"] == "os" and doc["entries"][-1]["product"] == "django"


def test_alpine_image_with_python_and_nodejs(products: dict[str, Product]) -> None:
    inv = IndexResult(
        "done",
        distro=Distro("alpine", "3.19.1"),
        packages=[
            Package("python3", "3.11.8-r0", "Alpine", type="os"),
            Package("nodejs", "20.15.1-r0", "Alpine", type="os"),
            Package("musl", "1.2.4_git20230717-r4", "Alpine", type="os"),
        ],
    )
    doc = evaluate(subjects(inv), products, dt.date(2025, 9, 1), 90)
    entries = by_product(doc)
    assert set(entries) == {("alpine-linux", "3.19"), ("python", "3.11"), ("nodejs", "20")}
    alpine = entries[("alpine-linux", "3.19")]
    assert (alpine["eol"], alpine["extended_support"], alpine["status"]) == ("2025-11-01", None, "eol_soon")
    assert by_product(view(doc, dt.date(2025, 9, 1), 90) or {})[("alpine-linux", "3.19")]["days_left"] == 61
    assert entries[("nodejs", "20")]["eol"] == "2026-04-30"
    assert entries[("nodejs", "20")]["status"] == "supported"
    assert entries[("python", "3.11")]["versions"] == ["3.11.8"]
    assert doc["status"] == "eol_soon"


def test_unknown_versions_are_listed_not_guessed(products: dict[str, Product]) -> None:
    inv = IndexResult("done", distro=Distro("debian", None, "sid"))
    doc = evaluate(subjects(inv, {"PYTHON_VERSION": "3"}), products, dt.date(2026, 1, 1), 90)
    assert doc["entries"] == [] and doc["status"] is None
    assert {(u["product"], u["version"]) for u in doc["unmatched"]} == {("debian", "sid"), ("python", "3")}
    # Without data the image says so instead of looking supported.
    nodata = evaluate(subjects(inv), None, dt.date(2026, 1, 1), 90)
    assert nodata["entries"] == [] and "hallmark db update" in nodata["note"]


# -- status over time -------------------------------------------------------------------------------


def test_status_boundaries_around_the_window() -> None:
    eol = dt.date(2026, 7, 11)
    day = dt.timedelta(days=1)
    assert status(eol, eol - 91 * day, 90) == "supported"
    assert status(eol, eol - 90 * day, 90) == "eol_soon"
    assert status(eol, eol - day, 90) == "eol_soon"
    assert status(eol, eol, 90) == "eol"
    assert status(eol, eol + day, 90) == "eol"
    assert status(eol, eol - 31 * day, 30) == "supported"
    assert status(eol, eol - 30 * day, 30) == "eol_soon"
    assert status(eol, eol - day, 0) == "supported"
    assert status(True, eol, 90) == "eol"  # ended, no date published
    assert status(False, eol, 90) == "supported"  # no end announced


def test_stored_document_moves_with_time(products: dict[str, Product]) -> None:
    doc = evaluate(subjects(IndexResult("done", distro=Distro("debian", "12"))), products, dt.date(2026, 1, 1), 90)
    assert doc["entries"][0]["status"] == "supported"
    eol = dt.date(2026, 7, 11)
    seen = {d: view(doc, eol - dt.timedelta(days=d), 90) for d in (91, 90, 0)}
    assert [seen[d]["entries"][0]["status"] for d in (91, 90, 0)] == ["supported", "eol_soon", "eol"]  # type: ignore[index]
    assert seen[90]["entries"][0]["days_left"] == 90  # type: ignore[index]
    assert "subjects" not in seen[0] and seen[0]["checked_on"] == "2026-07-11"  # type: ignore[operator,index]
    assert view(doc, eol - dt.timedelta(days=150), 180)["status"] == "eol_soon"  # type: ignore[index]
    assert view(None) is None


# -- the feed -----------------------------------------------------------------------------------------


def _hallmark(tmp: Path, **env: str) -> Hallmark:
    return Hallmark.open(load_config(environ={"HALLMARK_DATA_DIR": str(tmp / "data"), **env}))


def _mirror(root: Path, products: tuple[str, ...] = MIRRORED) -> Path:
    """A mirror folder in the offline layout: KEV (an advisory feed) and some product files,
    linked to the shared snapshot, not copied."""
    (root / "kev").mkdir(parents=True)
    (root / "kev" / "known_exploited_vulnerabilities.json").symlink_to(
        SHARED_DATA / "kev" / "known_exploited_vulnerabilities.json"
    )
    (root / FOLDER).mkdir(parents=True)
    for name in products:
        (root / FOLDER / f"{name}.json").symlink_to(SHARED_DATA / FOLDER / f"{name}.json")
    return root


def test_db_update_imports_eol_data_from_a_mirror_and_switches_atomically(tmp_path: Path) -> None:
    from hallmark.pipeline.advisory_sets import UpdateError, update

    hm = _hallmark(tmp_path, HALLMARK_ADVISORIES__OSV_ECOSYSTEMS="[]")
    try:
        assert active_products(hm.pipeline) is None
        record = update(hm.pipeline, str(_mirror(tmp_path / "m1")))
        eol = record["endoflife"]
        assert eol["products"] == sorted(MIRRORED) and eol["changed"] is True
        assert eol["cycles"] == 18 + 32 + 17 + 26 and eol["source"] == "endoflife.date"
        statuses = {f["path"]: f["status"] for f in record["files"] if f["path"].startswith(FOLDER)}
        assert statuses == {f"{FOLDER}/{p}.json": "copied" for p in MIRRORED}
        active = active_products(hm.pipeline)
        assert active is not None and active[0]["id"] == record["set"]
        assert active[1]["debian"].cycle("11") is not None
        first_job = hm.pipeline.jobs.claim("t", ["rematch"])
        assert first_job is not None and first_job.payload["endoflife_changed"] is True

        # The same data again: a new set, EOL data unchanged, nothing to recompute.
        again = update(hm.pipeline, str(tmp_path / "m1"))
        assert again["endoflife"]["changed"] is False and again["endoflife"]["digest"] == eol["digest"]
        job = hm.pipeline.jobs.claim("t", ["rematch"])
        assert job is not None and job.payload == {"set": again["set"], "endoflife_changed": False}

        # A broken product file: refused, the active set and its data stay, no folder is left.
        bad = _mirror(tmp_path / "m2", ("debian",))
        (bad / FOLDER / "python.json").write_text('{"releases": [{"releaseCycle": "3.99", "eol": "soon"}]}')
        folders = sorted(p.name for p in (hm.config.data_path / "advisories").iterdir())
        with pytest.raises(UpdateError, match=r"end-of-life data rejected: python 3\.99 eol"):
            update(hm.pipeline, str(bad))
        assert sorted(p.name for p in (hm.config.data_path / "advisories").iterdir()) == folders
        active = active_products(hm.pipeline)
        assert active is not None and active[0]["id"] == again["set"]

        # A mirror without the product files keeps the previous set's (never an empty table).
        bare = tmp_path / "m3"
        _mirror(bare, ())
        kept = update(hm.pipeline, str(bare))
        assert kept["endoflife"]["changed"] is False and kept["endoflife"]["products"] == sorted(MIRRORED)
        statuses = {f["path"]: f["status"] for f in kept["files"] if f["path"].startswith(FOLDER)}
        assert statuses == {
            f"{FOLDER}/{p}.json": "kept from the previous set (not offered by the source)" for p in MIRRORED
        }
        history = hm.pipeline.store.advisory_set_history()
        assert [h["active"] for h in history] == [True, False, False]
        assert history[0]["sources"]["endoflife"]["digest"] == eol["digest"]
    finally:
        hm.close()


class _Api(BaseHTTPRequestHandler):
    """endoflife.date's API for a few products, with ETags; every request is recorded."""

    docs: dict[str, bytes] = {}
    seen: list[tuple[str, str | None, int]] = []
    failing: set[str] = set()

    def do_GET(self) -> None:
        name = self.path.removeprefix("/api/").removesuffix(".json")
        code = 404
        if name in self.failing:
            code = 503
        elif self.path == "/kev.json":
            data = (SHARED_DATA / "kev" / "known_exploited_vulnerabilities.json").read_bytes()
            code = 200
        elif self.path.startswith("/api/") and name in self.docs:
            data = self.docs[name]
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            code = 304 if self.headers.get("If-None-Match") == etag else 200
        _Api.seen.append((self.path, self.headers.get("If-None-Match"), code))
        self.send_response(code)
        if code == 200:
            if self.path.startswith("/api/"):
                self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    _Api.docs = {p: json.dumps(api_layout(p)).encode() for p in MIRRORED}
    _Api.seen, _Api.failing = [], set()
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), _Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_db_update_fetches_the_live_api_with_conditional_requests(tmp_path: Path, api: str) -> None:
    from hallmark.pipeline.advisory_sets import update

    hm = _hallmark(
        tmp_path,
        HALLMARK_ADVISORIES__OSV_URL=f"{api}/osv",
        HALLMARK_ADVISORIES__OSV_ECOSYSTEMS="[]",
        HALLMARK_ADVISORIES__DEBIAN_TRACKER_URL=f"{api}/tracker.json",
        HALLMARK_ADVISORIES__SECURITY_SUPPORT_URL=f"{api}/support",
        HALLMARK_ADVISORIES__ALPINE_RELEASES="[]",
        HALLMARK_ADVISORIES__KEV_URL=f"{api}/kev.json",
        HALLMARK_ADVISORIES__EPSS_URL="",
        HALLMARK_LIFECYCLE__ENDOFLIFE_URL=f"{api}/api",
    )
    try:
        first = update(hm.pipeline)
        files = {f["path"]: f for f in first["files"]}
        assert files[f"{FOLDER}/debian.json"]["status"] == "downloaded"
        assert files[f"{FOLDER}/debian.json"]["source"] == f"{api}/api/debian.json"
        assert files[f"{FOLDER}/ubuntu.json"]["status"] == "http 404"  # recorded, not fatal
        assert first["endoflife"]["products"] == sorted(MIRRORED) and first["endoflife"]["changed"]
        active = active_products(hm.pipeline)
        assert active is not None
        snapshot = load_products(SHARED_DATA)
        assert all(active[1][p].cycles == snapshot[p].cycles for p in MIRRORED)
        requests = [s for s in _Api.seen if s[0] == "/api/python.json"]
        assert requests == [("/api/python.json", None, 200)]

        # Unchanged on the server: If-None-Match, 304, the file linked from the previous set.
        second = update(hm.pipeline)
        assert {f["path"]: f["status"] for f in second["files"]}[f"{FOLDER}/python.json"] == "not-modified"
        requests = [s for s in _Api.seen if s[0] == "/api/python.json"]
        assert requests[1][1] is not None and requests[1][2] == 304
        assert second["endoflife"]["changed"] is False

        # One product changed upstream, another one failing: downloaded, kept, and the data changed.
        cycles = api_layout("nodejs")
        cycles[0]["eol"] = "2031-01-01"
        _Api.docs["nodejs"] = json.dumps(cycles).encode()
        _Api.failing = {"debian"}
        third = update(hm.pipeline)
        statuses = {f["path"]: f["status"] for f in third["files"]}
        assert statuses[f"{FOLDER}/nodejs.json"] == "downloaded"
        assert statuses[f"{FOLDER}/debian.json"] == "kept from the previous set (http 503)"
        assert third["endoflife"]["changed"] is True
        active = active_products(hm.pipeline)
        assert active is not None and active[1]["nodejs"].cycles[0].eol == dt.date(2031, 1, 1)
        assert active[1]["debian"].cycle("12") == snapshot["debian"].cycle("12")
    finally:
        hm.close()


# -- images and policy ----------------------------------------------------------------------------------


def _image(hm: Hallmark, repo: str, digest: str, distro: Distro, stage: str = "approved") -> None:
    hm.pipeline.store.set_image(repo, digest, status="done")
    if stage != "staging":
        store = CatalogStore(hm.meta)
        assert store.transition(repo, digest, "staging", "approved", "setup", "test setup")
        if stage == "deprecated":
            assert store.transition(repo, digest, "approved", "deprecated", "alice", "moved to v2")


def _digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_auto_deprecation_and_retirement_go_through_the_catalog(
    tmp_path: Path, db: str, request: pytest.FixtureRequest
) -> None:
    from hallmark.catalog.service import CatalogService
    from hallmark.pipeline.advisory_sets import update

    database: dict[str, str] = {}
    if db == "postgres":
        database["HALLMARK_DATABASE_URL"] = request.getfixturevalue("postgres").create_db(f"eol{free_port()}")
    hm = _hallmark(
        tmp_path,
        **database,
        HALLMARK_ADVISORIES__OSV_ECOSYSTEMS="[]",
        HALLMARK_LIFECYCLE__AUTO_DEPRECATE_EOL_OS="true",
        HALLMARK_LIFECYCLE__AUTO_RETIRE_AFTER_DAYS="30",
    )
    old, new, recent, unknown = _digest(1), _digest(2), _digest(3), _digest(4)
    try:
        update(hm.pipeline, str(_mirror(tmp_path / "m")))
        _image(hm, "apps/old", old, Distro("debian", "11", "bullseye"))  # EOL 2024-08-14
        _image(hm, "apps/new", new, Distro("debian", "13", "trixie"))  # EOL 2028-08-09
        _image(hm, "apps/recent", recent, Distro("debian", "13", "trixie"), stage="deprecated")
        _image(hm, "apps/unknown", unknown, Distro("debian", "13"))  # indexed before this feature
        active = active_products(hm.pipeline)
        assert active is not None
        for repo, digest, distro in (("apps/old", old, "11"), ("apps/new", new, "13"), ("apps/recent", recent, "13")):
            found = subjects(IndexResult("done", distro=Distro("debian", distro)))
            store_many(hm.meta, [(repo, digest, evaluate(found, active[1], utcnow().date(), 90))])

        ran = Scheduler(hm.meta).run_due(hm, force=True, only={"lifecycle.policy"})
        assert [r["status"] for r in ran] == ["ok"], ran
        assert [d["image"] for d in ran[0]["detail"]["deprecated"]] == [f"apps/old@{old}"]
        assert ran[0]["detail"]["retired"] == [] and ran[0]["detail"]["errors"] == []
        catalog = CatalogService(hm.pipeline)
        entry = catalog.entry("apps/old", old)
        assert entry["stage"] == "deprecated"
        last = entry["history"][-1]
        assert (last["actor"], last["from"], last["to"]) == ("lifecycle", "approved", "deprecated")
        assert "Debian 11 (Bullseye) reached end of life on 2024-08-14 (endoflife.date)" in last["reason"]
        assert catalog.entry("apps/new", new)["stage"] == "approved"
        assert catalog.entry("apps/unknown", unknown)["stage"] == "approved"  # no data: no guess

        # Retirement counts from the deprecation: 31 days ago goes, 29 days ago stays.
        with hm.meta.transaction() as conn:
            for digest, days in ((old, 31), (recent, 29)):
                conn.execute(
                    sql_update(catalog_entries)
                    .where(catalog_entries.c.digest == digest)
                    .values(stage_changed_at=utcnow() - dt.timedelta(days=days))
                )
        ran = Scheduler(hm.meta).run_due(hm, force=True, only={"lifecycle.policy"})
        assert [d["image"] for d in ran[0]["detail"]["retired"]] == [f"apps/old@{old}"]
        entry = catalog.entry("apps/old", old)
        last = entry["history"][-1]
        assert entry["stage"] == "retired"
        assert (last["actor"], last["from"], last["to"]) == ("lifecycle", "deprecated", "retired")
        assert "retired 30 days after deprecation" in last["reason"] and "2024-08-14" in last["reason"]
        assert catalog.entry("apps/recent", recent)["stage"] == "deprecated"
    finally:
        hm.close()


def test_policy_job_is_off_by_default(tmp_path: Path) -> None:
    hm = _hallmark(tmp_path)
    try:
        assert Scheduler(hm.meta).run_due(hm, force=True, only={"lifecycle.policy"}) == []
    finally:
        hm.close()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_eol_job_recomputes_stored_and_unstored_images(tmp_path: Path, db: str, request: pytest.FixtureRequest) -> None:
    """The daily job: statuses from the stored subjects; an image indexed before this feature
    is found from its stored inventory."""
    from hallmark.index import INDEXER_VERSION
    from hallmark.pipeline.advisory_sets import update

    database: dict[str, str] = {}
    if db == "postgres":
        database["HALLMARK_DATABASE_URL"] = request.getfixturevalue("postgres").create_db(f"eol{free_port()}")
    hm = _hallmark(
        tmp_path, **database, HALLMARK_ADVISORIES__OSV_ECOSYSTEMS="[]", HALLMARK_LIFECYCLE__EOL_SOON_DAYS="60"
    )
    try:
        update(hm.pipeline, str(_mirror(tmp_path / "m")))
        inv = IndexResult(
            "done", distro=Distro("alpine", "3.19.1"), packages=[Package("nodejs", "20.15.1-r0", "Alpine", type="os")]
        )
        _image(hm, "apps/alpine", _digest(7), Distro("alpine", "3.19.1"), stage="staging")
        hm.pipeline.cache.put("image", INDEXER_VERSION, _digest(7), inv.to_json())
        stats = refresh_all(hm.pipeline, today=dt.date(2025, 9, 1))
        assert stats["images"] == 1 and stats["changed"] == 1 and stats["eol_soon"] == 0
        doc = lifecycle_of(hm.meta, "apps/alpine", _digest(7))
        assert doc is not None and doc["eol_soon_days"] == 60
        assert {(e["product"], e["status"]) for e in doc["entries"]} == {
            ("alpine-linux", "supported"),
            ("nodejs", "supported"),
        }
        # Ten days on, Alpine 3.19 is within the 60-day window; only the changed document is written.
        assert refresh_all(hm.pipeline, today=dt.date(2025, 9, 11))["eol_soon"] == 1
        assert refresh_all(hm.pipeline, today=dt.date(2025, 9, 12))["changed"] == 0
        ran = Scheduler(hm.meta).run_due(hm, force=True, only={"eol"})
        assert [r["status"] for r in ran] == ["ok"] and ran[0]["detail"]["images"] == 1
        doc = lifecycle_of(hm.meta, "apps/alpine", _digest(7))
        assert (
            doc is not None and by_product(doc)[("alpine-linux", "3.19")]["status"] == "eol"
        )  # today: past 2025-11-01
    finally:
        hm.close()


DPKG_PYTHON = b"""Package: python3.9
Status: install ok installed
Architecture: amd64
Version: 3.9.2-1
Description: Interactive high-level object-oriented language (version 3.9)

"""


def test_image_document_through_a_real_server(tmp_path: Path) -> None:
    """Pushed images get their lifecycle when matched, and again when `db update` brings new data."""
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import Server
    from tests.ocihelp import push_image
    from tests.pipeline.test_pipeline import wait_for

    data = tmp_path / "data"
    data.mkdir()
    env = {"HALLMARK_ADVISORIES__OSV_ECOSYSTEMS": "[]"}
    srv = Server(data, env=env).start()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        full = {"PATH": "/usr/bin:/bin", "HALLMARK_DATA_DIR": str(data), **env}
        return subprocess.run(
            [sys.executable, "-m", "hallmark", *args], env=full, capture_output=True, text=True, timeout=300
        )

    try:
        r = cli("db", "update", "--mirror", str(_mirror(tmp_path / "no-eol", ())))
        assert r.returncode == 0, r.stderr
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            files = {
                "etc/os-release": b'ID=debian\nVERSION_ID="11"\nVERSION_CODENAME=bullseye\n',
                "var/lib/dpkg/status": DPKG_PYTHON,
            }
            old = push_image(
                c, "eol/app", "v1", files=files, config_extra={"config": {"Env": ["NODE_VERSION=18.20.4"]}}
            )
            image = wait_for(c, "eol/app", old)
            assert image["lifecycle"]["entries"] == [] and "hallmark db update" in image["lifecycle"]["note"]
            assert {(s["product"], s["version"]) for s in image["lifecycle"]["unmatched"]} == {
                ("debian", "11"),
                ("python", "3.9.2"),
                ("nodejs", "18.20.4"),
            }

            r = cli("db", "update", "--mirror", str(_mirror(tmp_path / "eol")))
            assert r.returncode == 0, r.stderr
            assert "end-of-life data: 4 products, 93 release cycles (changed: images are re-evaluated)" in r.stdout
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not image["lifecycle"]["entries"]:
                time.sleep(0.2)
                image = c.get(f"/api/v1/repositories/eol/app/images/{old}").json()
            lifecycle = image["lifecycle"]
            entries = by_product(lifecycle)
            assert set(entries) == {("debian", "11"), ("python", "3.9"), ("nodejs", "18")}
            debian = entries[("debian", "11")]
            assert (debian["eol"], debian["extended_support"], debian["status"]) == ("2024-08-14", "2026-08-31", "eol")
            assert entries[("python", "3.9")]["eol"] == "2025-10-31"
            assert entries[("python", "3.9")]["from"][0] == {
                "type": "package",
                "ecosystem": "Debian",
                "name": "python3.9",
                "version": "3.9.2-1",
            }
            assert entries[("nodejs", "18")]["from"][0]["type"] == "image-env"
            assert lifecycle["status"] == "eol" and lifecycle["os"] == "debian 11" and "subjects" not in lifecycle

            # An image pushed once the data is there is evaluated when it is matched.
            alpine = push_image(c, "eol/alpine", "v1", files={"etc/alpine-release": b"3.19.1\n"})
            image = wait_for(c, "eol/alpine", alpine)
            assert [(e["product"], e["cycle"], e["eol"]) for e in image["lifecycle"]["entries"]] == [
                ("alpine-linux", "3.19", "2025-11-01")
            ]
        r = cli("lifecycle", "run", "--all", "--job", "eol")
        assert r.returncode == 0, r.stderr
        ran = json.loads(r.stdout)["ran"]
        assert [(j["job"], j["status"], j["detail"]["images"]) for j in ran] == [("eol", "ok", 2)]
    finally:
        srv.stop()
