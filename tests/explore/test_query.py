"""The explore query, row by row, on SQLite and PostgreSQL: the issue's three examples, each filter
alone and composed, pagination, and bad filter input."""

from __future__ import annotations

from typing import Any

import pytest

from hallmark.explore.filters import ExploreError, parse_filters, parse_package
from hallmark.explore.query import explore, version_matches
from hallmark.metadata.store import MetadataStore
from tests.explore.graph import D1, D2, D3, D4, D5, D6, D7, DX, GATEWAY, RUN_URL, SHOP, TOOLS


def run(meta: MetadataStore, **params: str) -> dict[str, Any]:
    return explore(meta, parse_filters(params))


def keys(page: dict[str, Any]) -> list[tuple[str, ...]]:
    """(cluster, namespace, kind, name, image ref) per row of the workloads view."""
    return [
        (
            r["workload"]["cluster"],
            r["workload"]["namespace"],
            r["workload"]["kind"],
            r["workload"]["name"],
            r["image"]["ref"],
        )
        for r in page["rows"]
    ]


def ids(row: dict[str, Any]) -> list[str]:
    return [f["id"] for f in row["findings"]]


# -- the examples -----------------------------------------------------------------------------


def test_exposed_workloads_with_critical_findings_and_the_repository_to_fix(graph: MetadataStore) -> None:
    page = run(graph, exposed="true", severity="critical")
    assert keys(page) == [
        ("dev", "legacy", "StatefulSet", "db", f"legacy/app@{D5}"),
        ("prod", "shop", "Deployment", "web", f"shop/web@{D1}"),
        ("staging", "shop", "Deployment", "web", f"shop/web@{D1}"),
    ]
    legacy, prod, staging = page["rows"]
    # only the findings that matched (the VEX-suppressed critical one is not among them)
    assert ids(prod) == ["CVE-2024-0001"] and prod["finding_count"] == 1
    assert prod["findings"][0] == {
        "id": "CVE-2024-0001",
        "aliases": [],
        "severity": "critical",
        "package": "openssl",
        "version": "3.0.2-1",
        "ecosystem": "Debian:12",
        "fix_available": True,
        "kev": True,
        "suppressed": False,
    }
    # the verified (signed SLSA) source first, the contradicting annotation kept after it
    assert prod["source"] == {
        "repository": SHOP,
        "commit": "b" * 40,
        "pipeline": "release",
        "run_id": "42",
        "run_url": RUN_URL,
        "builder_id": "https://github.com/actions/runner",
        "kind": "slsa",
        "origin": "sha256:" + "e" * 64,
        "verified": True,
        "via": None,
    }
    assert [(p["kind"], p["commit"]) for p in prod["provenance"]] == [("slsa", "b" * 40), ("annotation", "a" * 40)]
    assert prod["owner"] == {"name": "storefront", "kind": "team"}
    assert prod["grade"] == "D"
    assert prod["lifecycle"]["stage"] == "approved"
    assert prod["workload"]["exposed"] is True
    assert prod["workload"]["exposure"][0]["host"] == "shop.example"
    assert prod["containers"] == [{"name": "web", "type": "container", "image_ref": f"registry.example/shop/web@{D1}"}]
    assert prod["image"]["digest_source"] == "status" and staging["image"]["digest_source"] == "spec"
    # an image without provenance says so; a retired one names its replacement
    assert legacy["source"] is None and legacy["provenance"] == []
    assert legacy["lifecycle"]["stage"] == "retired" and legacy["lifecycle"]["replacement"] == f"shop/web@{D1}"
    assert page["next_cursor"] is None


def test_running_workloads_affected_by_a_cve_by_id_or_alias(graph: MetadataStore) -> None:
    page = run(graph, cve="CVE-2024-0002")  # an alias of DSA-5555-1
    assert keys(page) == [
        ("prod", "shop", "Deployment", "api", f"shop/web@{D1}"),  # the proxy sidecar runs D1 by digest only
        ("prod", "shop", "Deployment", "web", f"shop/web@{D1}"),
        ("staging", "shop", "Deployment", "web", f"shop/web@{D1}"),
    ]
    assert {tuple(ids(r)) for r in page["rows"]} == {("DSA-5555-1",)}
    assert page["rows"][0]["findings"][0]["aliases"] == ["CVE-2024-0002"]
    assert page["rows"][0]["containers"][0]["name"] == "proxy"
    # the advisory's own id, another alias, lower case CVE
    assert keys(run(graph, cve="DSA-5555-1")) == keys(page)
    assert keys(run(graph, cve="cve-2024-0002")) == keys(page)
    assert len(run(graph, cve="PYSEC-2019-217")["rows"]) == 3
    # a CVE in a not-running image only: no workload, but the images view finds the image
    assert run(graph, cve="CVE-2024-0005")["rows"] == []
    img = run(graph, cve="CVE-2024-0005", view="images")["rows"]
    assert [r["image"]["ref"] for r in img] == [f"shop/web@{D4}"] and img[0]["workload_count"] == 0
    assert run(graph, cve="CVE-2099-0001")["rows"] == []


def test_images_built_from_a_repository_that_run_anywhere(graph: MetadataStore) -> None:
    page = run(graph, source_repo="https://github.com/acme/shop.git", view="images", running="true")
    rows = page["rows"]
    assert [r["image"]["ref"] for r in rows] == [f"shop/api@{D2}", f"shop/web@{D1}"]
    api, web = rows
    assert api["workloads"] == [
        {"cluster": "prod", "namespace": "shop", "kind": "Deployment", "name": "api", "exposed": False}
    ]
    assert [(w["cluster"], w["name"]) for w in web["workloads"]] == [
        ("prod", "api"),
        ("prod", "web"),
        ("staging", "web"),
    ]
    assert web["workload_count"] == 3 and web["exposed_count"] == 2
    assert api["source"]["commit"] == "c" * 40 and api["source"]["run_url"].endswith("/runs/43")
    assert ids(web) == ["CVE-2024-0001", "DSA-5555-1", "GHSA-aaaa-bbbb-cccc"]  # suppressed left out
    # not running: the older build
    idle = run(graph, source_repo="github.com/acme/shop", view="images", running="false")["rows"]
    assert [r["image"]["ref"] for r in idle] == [f"shop/web@{D4}"]
    # every build of the repository, whatever runs
    every = run(graph, source_repo="acme/shop", view="images")["rows"]
    assert [r["image"]["ref"] for r in every] == [f"shop/api@{D2}", f"shop/web@{D1}", f"shop/web@{D4}"]
    # the workloads view of the same question
    assert {k[:4] for k in keys(run(graph, source_repo=SHOP))} == {
        ("prod", "shop", "Deployment", "api"),
        ("prod", "shop", "Deployment", "web"),
        ("staging", "shop", "Deployment", "web"),
    }
    tools = run(graph, source_repo=TOOLS, view="images")["rows"]
    assert [r["image"]["ref"] for r in tools] == [f"tools/batch@{D3}"]


# -- each filter --------------------------------------------------------------------------------------


def test_no_filter_lists_every_running_hallmark_image_with_all_unsuppressed_findings(graph: MetadataStore) -> None:
    page = run(graph)
    assert len(page["rows"]) == 7  # the unknown digest of prod/batch/nightly is not a Hallmark image
    api_row = next(r for r in page["rows"] if r["image"]["ref"] == f"shop/api@{D2}")
    assert ids(api_row) == ["CVE-2024-0003", "CVE-2024-0004"]
    assert api_row["findings"][1]["severity"] == "unknown"


def test_severity_is_at_or_above(graph: MetadataStore) -> None:
    high = run(graph, severity="high")
    assert {k[4] for k in keys(high)} == {
        f"shop/web@{D1}",
        f"shop/api@{D2}",
        f"legacy/app@{D5}",
        f"shop/multi@{D6}",
        f"shop/multi@{D7}",
    }
    web = next(r for r in high["rows"] if r["image"]["digest"] == D1)
    assert ids(web) == ["CVE-2024-0001", "DSA-5555-1"]
    assert {k[4] for k in keys(run(graph, severity="low"))} >= {f"shop/api@{D2}"}


def test_kev_and_fix_available_apply_to_the_same_finding(graph: MetadataStore) -> None:
    kev = run(graph, kev="true")
    assert {k[4] for k in keys(kev)} == {f"shop/web@{D1}"}
    assert {tuple(ids(r)) for r in kev["rows"]} == {("CVE-2024-0001",)}
    fixable = run(graph, fix_available="true", severity="critical")
    assert {k[4] for k in keys(fixable)} == {f"shop/web@{D1}", f"legacy/app@{D5}"}
    no_fix = run(graph, fix_available="false")
    assert {tuple(ids(r)) for r in no_fix["rows"]} == {("CVE-2024-0004",)}  # shop/api's unrated curl
    assert run(graph, kev="true", fix_available="false")["rows"] == []  # the KEV one has a fix


def test_package_name_and_version_ranges_by_ecosystem(graph: MetadataStore) -> None:
    openssl = run(graph, package="openssl", view="images")["rows"]
    assert [r["image"]["ref"] for r in openssl] == [
        f"legacy/app@{D5}",
        f"shop/api@{D2}",
        f"shop/web@{D1}",
        f"tools/batch@{D3}",
    ]
    # dpkg ordering: 3.0.2-1 < 3.0.7 <= 3.0.9-1; 1.1.1n-0+deb11u3 < 3.0.7
    below = run(graph, package="openssl@<3.0.7", view="images")["rows"]
    assert [r["image"]["ref"] for r in below] == [f"legacy/app@{D5}", f"shop/web@{D1}", f"tools/batch@{D3}"]
    window = run(graph, package="openssl@>=3.0,<3.0.10", view="images")["rows"]
    assert [r["image"]["ref"] for r in window] == [f"shop/api@{D2}", f"shop/web@{D1}", f"tools/batch@{D3}"]
    exact = run(graph, package="openssl@3.0.9-1", view="images")["rows"]
    assert [r["image"]["ref"] for r in exact] == [f"shop/api@{D2}"]
    # PEP 440 for PyPI: 2.10 < 2.9 as strings, not as versions; name case-insensitive as listed lower
    assert run(graph, package="Jinja2@<2.9", view="images")["rows"] == []
    assert [r["image"]["ref"] for r in run(graph, package="Jinja2@<2.10.1", view="images")["rows"]] == [
        f"shop/web@{D1}"
    ]
    assert run(graph, package="openssl@<1.0")["rows"] == []


def test_version_matching_rules() -> None:
    spec = parse_package("x@>=1.2,<2")
    assert version_matches(spec, "PyPI", "1.10") and not version_matches(spec, "PyPI", "2.0")
    assert version_matches(spec, "npm", "1.2.0") and not version_matches(spec, "npm", "1.1.9")
    assert not version_matches(spec, "Packagist", "1.5")  # no ordering known: never "in range"
    assert version_matches(parse_package("x@1.5"), "Packagist", "1.5")  # equality needs none
    assert not version_matches(spec, "Debian:12", "not a version!")


def test_grade_owner_cluster_namespace_exposed(graph: MetadataStore) -> None:
    assert {k[4] for k in keys(run(graph, grade="D,e"))} == {f"shop/web@{D1}", f"legacy/app@{D5}"}
    assert {k[4] for k in keys(run(graph, owner="payments"))} == {f"shop/api@{D2}"}
    assert {k[:4] for k in keys(run(graph, owner="storefront", exposed="false"))} == {
        ("prod", "shop", "Deployment", "api")
    }
    assert {k[0] for k in keys(run(graph, cluster="staging"))} == {"staging"}
    assert {k[:4] for k in keys(run(graph, namespace="legacy"))} == {("dev", "legacy", "StatefulSet", "db")}
    assert run(graph, cluster="nowhere")["rows"] == []
    running_in_prod = run(graph, view="images", cluster="prod")["rows"]
    assert [r["image"]["ref"] for r in running_in_prod] == [
        f"shop/api@{D2}",
        f"shop/multi@{D6}",
        f"shop/multi@{D7}",
        f"shop/web@{D1}",
    ]
    assert {w["cluster"] for w in running_in_prod[3]["workloads"]} == {"prod"}


def test_include_suppressed(graph: MetadataStore) -> None:
    page = run(graph, cve="CVE-2024-0009")
    assert page["rows"] == []
    shown = run(graph, cve="CVE-2024-0009", include_suppressed="true")
    assert {k[4] for k in keys(shown)} == {f"shop/web@{D1}"}
    assert shown["rows"][0]["findings"][0]["suppressed"] is True


def test_pages_follow_the_cursor_without_gaps_or_repeats(graph: MetadataStore) -> None:
    every = keys(run(graph))
    seen: list[tuple[str, ...]] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = run(graph, **params)
        seen += keys(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == every
    images_all = [r["image"]["ref"] for r in run(graph, view="images")["rows"]]
    paged: list[str] = []
    page = run(graph, view="images", limit="3")
    while True:
        paged += [r["image"]["ref"] for r in page["rows"]]
        if page["next_cursor"] is None:
            break
        page = run(graph, view="images", limit="3", cursor=page["next_cursor"])
    assert paged == images_all and len(images_all) == 7


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"severity": "urgent"}, "severity"),
        ({"severity": "unknown"}, "severity"),
        ({"exposed": "maybe"}, "exposed"),
        ({"kev": "2"}, "kev"),
        ({"grade": "A,Z"}, "grade"),
        ({"package": "openssl@~3"}, "package"),
        ({"package": "@1.0"}, "package"),
        ({"package": "openssl@<1,>"}, "package"),
        ({"cve": "CVE 2024"}, "cve"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"view": "pods"}, "view"),
        ({"running": "true"}, "running"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cluster": "a b"}, "cluster"),
        ({"severty": "high"}, "severty"),
    ],
)
def test_bad_filter_input_names_the_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(ExploreError) as err:
        parse_filters(params)
    assert err.value.field == field
    assert str(err.value).startswith(field + ": ")


def test_a_cursor_of_the_other_view_is_refused(graph: MetadataStore) -> None:
    cursor = run(graph, limit="1")["next_cursor"]
    with pytest.raises(ExploreError, match="cursor"):
        parse_filters({"view": "images", "cursor": cursor})


def test_a_container_running_an_image_index_is_joined_to_its_platform_images(graph: MetadataStore) -> None:
    page = run(graph, cve="CVE-2024-0100")
    assert keys(page) == [
        ("prod", "multi", "Deployment", "gateway", f"shop/multi@{D6}"),
        ("prod", "multi", "Deployment", "gateway", f"shop/multi@{D7}"),
    ]
    for row in page["rows"]:
        assert row["image"]["index_digest"] == DX and row["image"]["digest_source"] == "status"
        assert row["containers"] == [
            {"name": "gw", "type": "container", "image_ref": f"registry.example/shop/multi@{DX}"}
        ]
    direct = run(graph, cve="CVE-2024-0001", cluster="prod", namespace="shop", exposed="true")["rows"][0]
    assert direct["image"]["index_digest"] is None
    # provenance attached to the index (as a multi-platform build's attestation is) names their source
    source = page["rows"][0]["source"]
    assert (source["repository"], source["commit"], source["via"]) == (GATEWAY, "9" * 40, "index")
    assert keys(run(graph, source_repo="acme/gateway")) == keys(page)
    images = run(graph, cve="CVE-2024-0100", view="images", running="true")["rows"]
    assert [(r["image"]["ref"], r["workload_count"]) for r in images] == [
        (f"shop/multi@{D6}", 1),
        (f"shop/multi@{D7}", 1),
    ]
    assert images[0]["workloads"][0]["name"] == "gateway"
    assert run(graph, cve="CVE-2024-0100", view="images", running="false")["rows"] == []
    # pages merge the two joins in one order
    every = keys(run(graph))
    assert every == sorted(every)
    halves = run(graph, limit="3")
    assert keys(halves) + keys(run(graph, limit="10", cursor=halves["next_cursor"])) == every
