"""A small code-to-cloud graph written straight into the tables (the ingestion modules have their
own tests): three source repositories, five images, four clusters' workloads, contradicting
provenance, VEX-suppressed and aliased findings, owners, grades and a retired image."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from hallmark.catalog.tables import catalog_entries
from hallmark.inventory.tables import clusters, workload_images, workloads
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import manifest_refs, repositories
from hallmark.pipeline.finding_rows import replace_findings
from hallmark.pipeline.tables import images
from hallmark.provenance.tables import provenance

SHOP = "https://github.com/acme/shop"
TOOLS = "https://github.com/acme/tools"
GATEWAY = "https://github.com/acme/gateway"
D1 = "sha256:" + "1" * 64  # shop/web, running exposed in prod and staging
D2 = "sha256:" + "2" * 64  # shop/api, running unexposed in prod
D3 = "sha256:" + "3" * 64  # tools/batch, built from acme/tools, not running
D4 = "sha256:" + "4" * 64  # shop/web, an older build, not running
D5 = "sha256:" + "5" * 64  # legacy/app: no provenance, retired, running in dev
D6 = "sha256:" + "6" * 64  # shop/multi linux/amd64, listed by the index DX
D7 = "sha256:" + "7" * 64  # shop/multi linux/arm64, listed by the index DX
DX = "sha256:" + "8" * 64  # shop/multi image index: what the gateway's runtime reports
UNKNOWN = "sha256:" + "9" * 64  # a digest Hallmark does not hold
RUN_URL = "https://github.com/acme/shop/actions/runs/42"


def finding(
    adv: str,
    severity: str | None,
    package: str = "openssl",
    version: str = "3.0.2-0ubuntu1",
    ecosystem: str = "Debian:12",
    fixed: list[str] | None = None,
    kev: bool = False,
    aliases: list[str] | None = None,
    suppressed: bool = False,
) -> dict[str, Any]:
    f: dict[str, Any] = {
        "advisory_id": adv,
        "aliases": aliases or [],
        "package": package,
        "ecosystem": ecosystem,
        "installed_version": version,
        "fixed_versions": fixed or [],
        "severity": severity,
        "kev": kev,
        "purl": None,
    }
    if suppressed:
        f["suppressed"] = {"by": "vex", "status": "not_affected"}
    return f


FINDINGS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("shop/web", D1): [
        finding("CVE-2024-0001", "critical", fixed=["3.0.7-1"], kev=True, version="3.0.2-1"),
        finding("DSA-5555-1", "high", package="libc6", version="2.36-9", aliases=["CVE-2024-0002"], fixed=["2.36-9+1"]),
        finding("CVE-2024-0009", "critical", package="zlib1g", version="1.2.13", suppressed=True),
        finding(
            "GHSA-aaaa-bbbb-cccc",
            "medium",
            package="jinja2",
            version="2.10",
            ecosystem="PyPI",
            aliases=["CVE-2019-10906", "PYSEC-2019-217"],
            fixed=["2.10.1"],
        ),
    ],
    ("shop/api", D2): [
        finding("CVE-2024-0003", "high", package="openssl", version="3.0.9-1", fixed=["3.0.11-1"]),
        finding("CVE-2024-0004", None, package="curl", version="7.88.1-10"),
    ],
    ("tools/batch", D3): [
        finding("CVE-2024-0001", "critical", version="3.0.2-1", kev=True),
    ],
    ("shop/web", D4): [
        finding("CVE-2024-0005", "low", package="bash", version="5.2.15-2"),
    ],
    ("legacy/app", D5): [
        finding(
            "CVE-2024-0006",
            "critical",
            package="openssl",
            version="1.1.1n-0+deb11u3",
            ecosystem="Debian:11",
            fixed=["1.1.1n-0+deb11u4"],
        ),
    ],
}
FINDINGS[("shop/multi", D6)] = [finding("CVE-2024-0100", "high", package="libc6", version="2.36-9", fixed=["2.36-10"])]
FINDINGS[("shop/multi", D7)] = [finding("CVE-2024-0100", "high", package="libc6", version="2.36-9", fixed=["2.36-10"])]
GRADES = {D1: "D", D2: "C", D3: "F", D4: "B", D5: "E", D6: "B", D7: "B"}


def _image(meta: MetadataStore, repo: str, digest: str, grade: str) -> None:
    with meta.transaction() as conn:
        conn.execute(
            images.insert().values(repo_name=repo, digest=digest, status="done", grade=grade, updated_at=utcnow())
        )


def _prov(meta: MetadataStore, digest: str, kind: str, origin: str, verified: bool | None, **cols: Any) -> None:
    with meta.transaction() as conn:
        conn.execute(
            provenance.insert().values(
                digest=digest, kind=kind, origin=origin, verified=verified, facts="{}", created_at=utcnow(), **cols
            )
        )


def add_workload(
    meta: MetadataStore,
    cluster: str,
    namespace: str,
    kind: str,
    name: str,
    containers: list[tuple[str, str | None, str | None, str | None]],
    exposure: list[dict[str, Any]] | None = None,
) -> int:
    """``containers``: (name, digest, digest_source, repo_name)."""
    with meta.transaction() as conn:
        if conn.execute(clusters.select().where(clusters.c.name == cluster)).first() is None:
            now = utcnow()
            conn.execute(
                clusters.insert().values(
                    name=cluster, inventory_at=now, received_at=now, received_by="test", summary="{}"
                )
            )
        res = conn.execute(
            workloads.insert().values(
                cluster=cluster,
                namespace=namespace,
                kind=kind,
                name=name,
                exposed=bool(exposure),
                exposure=orjson.dumps(exposure or []).decode(),
            )
        )
        assert res.inserted_primary_key is not None
        wid = res.inserted_primary_key[0]
        for cname, digest, source, repo in containers:
            conn.execute(
                workload_images.insert().values(
                    workload_id=wid,
                    container=cname,
                    container_type="container",
                    image_ref=f"registry.example/{repo or 'x'}@{digest}",
                    digest=digest,
                    digest_source=source,
                    repo_name=repo,
                )
            )
    return int(wid)


INGRESS = [{"via": "ingress", "ingress": "web", "host": "shop.example", "path": "/", "service": "web", "port": 80}]
LB = [{"via": "service", "type": "LoadBalancer", "service": "web", "ports": [443]}]


def build(meta: MetadataStore) -> None:
    for (repo, digest), fs in FINDINGS.items():
        _image(meta, repo, digest, GRADES[digest])
        replace_findings(meta, repo, digest, {"findings": fs})
    # D1: an annotation says commit aaa, signed SLSA provenance says bbb (verified): both kept.
    _prov(meta, D1, "annotation", "manifest", None, source_repo=SHOP, revision="a" * 40)
    _prov(
        meta,
        D1,
        "slsa",
        "sha256:" + "e" * 64,
        True,
        source_repo=SHOP,
        revision="b" * 40,
        pipeline="release",
        run_id="42",
        run_url=RUN_URL,
        builder_id="https://github.com/actions/runner",
    )
    _prov(
        meta,
        D2,
        "ci",
        "api:robot$ci",
        None,
        source_repo=SHOP,
        revision="c" * 40,
        pipeline="api",
        run_id="43",
        run_url="https://github.com/acme/shop/actions/runs/43",
    )
    _prov(meta, D3, "label", "config", None, source_repo=TOOLS, revision="d" * 40)
    _prov(meta, D4, "annotation", "manifest", None, source_repo=SHOP, revision="f" * 40)
    with meta.transaction() as conn:
        now = utcnow()
        base = {"replacement": None, "stage_changed_at": None}
        conn.execute(
            catalog_entries.insert(),
            [
                base
                | {
                    "repo_name": "shop/web",
                    "digest": D1,
                    "stage": "approved",
                    "owner": "storefront",
                    "owner_kind": "team",
                    "updated_at": now,
                },
                base
                | {
                    "repo_name": "shop/api",
                    "digest": D2,
                    "stage": "staging",
                    "owner": "payments",
                    "owner_kind": "team",
                    "updated_at": now,
                },
                base
                | {
                    "repo_name": "legacy/app",
                    "digest": D5,
                    "stage": "retired",
                    "owner": "storefront",
                    "owner_kind": "team",
                    "replacement": "shop/web@" + D1,
                    "updated_at": now,
                    "stage_changed_at": now - dt.timedelta(days=1),
                },
            ],
        )
    add_workload(meta, "prod", "shop", "Deployment", "web", [("web", D1, "status", "shop/web")], INGRESS)
    add_workload(
        meta,
        "prod",
        "shop",
        "Deployment",
        "api",
        [("api", D2, "status", "shop/api"), ("proxy", D1, "spec", None)],
    )
    add_workload(meta, "staging", "shop", "Deployment", "web", [("web", D1, "spec", "shop/web")], LB)
    add_workload(meta, "prod", "batch", "CronJob", "nightly", [("job", UNKNOWN, "status", None)])
    add_workload(meta, "dev", "legacy", "StatefulSet", "db", [("db", D5, "tag", "legacy/app")], LB)
    # a multi-platform image pulled by tag: the runtime reports the index digest
    with meta.transaction() as conn:
        res = conn.execute(
            repositories.insert().values(name="shop/multi", immutable_tags=False, created_at=utcnow())
        )
        assert res.inserted_primary_key is not None
        rid = res.inserted_primary_key[0]
        conn.execute(
            manifest_refs.insert(),
            [{"repo_id": rid, "digest": DX, "ref_digest": d, "kind": "manifest"} for d in (D6, D7)],
        )
    add_workload(meta, "prod", "multi", "Deployment", "gateway", [("gw", DX, "status", "shop/multi")])
    _prov(meta, DX, "ci", "api:robot$ci", None, repo_name="shop/multi", source_repo=GATEWAY, revision="9" * 40)
