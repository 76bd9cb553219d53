"""End to end on a real server: push an image, post a kubectl-shaped inventory of the cluster that
runs it, then let the advisory data change under it. The workload is found by a CVE that
appeared after the push (re-matched findings), by KEV once CISA lists it (a rating change that
leaves the report's findings as they were), left out once VEX says not affected, and no more once
the image is deleted."""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from hallmark.config import load_config
from hallmark.metadata.db import make_engine
from hallmark.pipeline.tables import image_findings
from tests.conftest import SHARED_DATA, Server
from tests.inventory.helpers import as_list, bare_pod
from tests.ocihelp import push_image
from tests.pipeline.test_pipeline import hallmark_cli, image_files, wait_for

CVE = "CVE-2019-10906"  # an alias of PYSEC-2019-217 (jinja2 < 2.10.1)


def _osv_zip(path: Path, records: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for rec in records:
            zf.writestr(f"{json.loads(rec)['id']}.json", rec)


def _kev(path: Path, cves: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    vulns = [
        {"cveID": c, "vendorProject": "Pallets", "product": "Jinja2", "vulnerabilityName": "sandbox escape",
         "dateAdded": "2026-12-01", "dueDate": "2026-12-22", "knownRansomwareCampaignUse": "Unknown"}
        for c in cves
    ]  # fmt: skip
    doc = {"title": "CISA KEV", "catalogVersion": "2026.12.05", "count": len(vulns), "vulnerabilities": vulns}
    path.write_text(json.dumps(doc))


def _service(name: str, selector: dict[str, str], kind: str = "LoadBalancer") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "uid": "5e5e5e5e-0000-4000-8000-000000000001"},
        "spec": {
            "type": kind,
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
    }


def finding_rows(data: Path, digest: str) -> int:
    engine = make_engine(load_config(environ={"HALLMARK_DATA_DIR": str(data)}).database_url, 1)
    try:
        with engine.connect() as conn:
            q = select(func.count()).select_from(image_findings).where(image_findings.c.digest == digest)
            return int(conn.execute(q).scalar_one())
    finally:
        engine.dispose()


def until(fn: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll until ``fn`` returns something truthy (the server re-matches in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"never: {what}")


@pytest.mark.skipif(not (SHARED_DATA / "osv").is_dir(), reason="shared advisory snapshot not present")
def test_workloads_found_by_advisories_that_appeared_after_the_push(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data).start()
    try:
        with zipfile.ZipFile(SHARED_DATA / "osv" / "PyPI" / "all.zip") as zf:
            jinja = zf.read("PYSEC-2019-217.json")
            other = zf.read(sorted(n for n in zf.namelist() if "jinja" not in zf.read(n).decode().lower())[0])
        mirror = tmp_path / "mirror"
        _osv_zip(mirror / "osv" / "PyPI" / "all.zip", [other])
        proc = hallmark_cli(srv, "db", "update", "--mirror", str(mirror))
        assert proc.returncode == 0, proc.stderr
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            digest = push_image(c, "shop/web", "v1", files=image_files("11", "bullseye"))
            assert wait_for(c, "shop/web", digest)["status"] == "done"
            pod = bare_pod("web", f"{srv.host}/shop/web:v1", f"{srv.host}/shop/web@{digest}")
            r = c.post("/api/v1/clusters/prod/inventory", json=as_list(pod, _service("web", {"run": "web"})))
            assert r.status_code == 200, r.text

            def explore(**params: str) -> list[dict[str, Any]]:
                r = c.get("/api/v1/explore", params=params)
                assert r.status_code == 200, r.text
                rows: list[dict[str, Any]] = r.json()["rows"]
                return rows

            # the workload runs the image, exposed by the LoadBalancer; no advisory names jinja2 yet
            rows = explore(exposed="true")
            assert [(x["workload"]["kind"], x["workload"]["name"], x["image"]["digest"]) for x in rows] == [
                ("Pod", "web", digest)
            ]
            assert rows[0]["workload"]["exposure"][0]["type"] == "LoadBalancer"
            assert rows[0]["image"]["digest_source"] == "status"
            assert explore(cve=CVE) == []
            # the advisory appears: the stored inventory is re-matched, the workload is found by its CVE
            _osv_zip(mirror / "osv" / "PyPI" / "all.zip", [other, jinja])
            assert hallmark_cli(srv, "db", "update", "--mirror", str(mirror)).returncode == 0
            rows = until(lambda: explore(cve=CVE), "the re-matched finding")
            assert [(x["workload"]["cluster"], x["workload"]["name"]) for x in rows] == [("prod", "web")]
            (found,) = rows[0]["findings"]
            assert found["id"] == "PYSEC-2019-217" and CVE in found["aliases"]
            assert found["package"] == "jinja2" and found["version"] == "2.10" and found["fix_available"]
            assert found["kev"] is False and explore(kev="true") == []
            # CISA lists the CVE: same findings (same report fingerprint), the KEV flag moves
            _kev(mirror / "kev" / "known_exploited_vulnerabilities.json", [CVE])
            assert hallmark_cli(srv, "db", "update", "--mirror", str(mirror)).returncode == 0
            rows = until(lambda: explore(kev="true", exposed="true"), "the KEV flag")
            assert [f["id"] for f in rows[0]["findings"]] == ["PYSEC-2019-217"]
            # VEX says not affected: left out by default, shown (marked) on request
            vex = {
                "@context": "https://openvex.dev/ns/v0.2.0",
                "@id": "https://example.com/vex/explore",
                "author": "security@example.com",
                "timestamp": "2026-01-01T00:00:00Z",
                "version": 1,
                "statements": [
                    {
                        "vulnerability": {"name": CVE},
                        "products": [{"@id": f"pkg:oci/web@{digest}"}],
                        "status": "not_affected",
                        "justification": "vulnerable_code_not_in_execute_path",
                    }
                ],
            }
            r = c.post(f"/api/v1/repositories/shop/web/images/{digest}/vex", content=json.dumps(vex))
            assert r.status_code == 201, r.text
            until(lambda: explore(cve=CVE) == [], "the VEX statement applied")
            shown = explore(cve=CVE, include_suppressed="true")
            assert [f["suppressed"] for f in shown[0]["findings"]] == [True]
            # deleting the image takes its finding rows along
            assert finding_rows(data, digest) == 1
            assert c.delete(f"/v2/shop/web/manifests/{digest}").status_code == 202
            until(lambda: finding_rows(data, digest) == 0, "rows gone with the image")
            assert explore(cve=CVE) == [] and explore(view="images") == []
    finally:
        srv.stop()
