"""``hallmark explore``: which workloads run what, exposed how, built from which commit, owned by whom.

Reads the data folder's database by default, like the other operator commands; with
``--server URL`` it asks a running server's ``GET /api/v1/explore`` instead, with a token
from ``HALLMARK_TOKEN`` or ``--token-stdin`` (the caller needs the security_reviewer or
auditor role there). Filters are validated by the same code either way.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import orjson
import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _local(params: dict[str, str], data_dir: str | None, config: str | None) -> dict[str, Any]:
    from hallmark.app import Hallmark
    from hallmark.explore.filters import ExploreError, parse_filters
    from hallmark.explore.query import explore

    try:
        filters = parse_filters(params)
    except ExploreError as exc:
        raise _fail(str(exc)) from exc
    hm = Hallmark.open(get_config(data_dir, config))
    try:
        return explore(hm.meta, filters)
    finally:
        hm.close()


def _remote(params: dict[str, str], server: str, token: str | None, insecure: bool) -> dict[str, Any]:
    import httpx

    from hallmark.explore.filters import ExploreError, parse_filters

    try:
        parse_filters(params)  # the same message as the server's, without a round trip
    except ExploreError as exc:
        raise _fail(str(exc)) from exc
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = server.rstrip("/") + "/api/v1/explore"
    try:
        resp = httpx.get(url, params=params, headers=headers, timeout=60, verify=not insecure)
    except httpx.HTTPError as exc:
        raise _fail(f"{server}: {exc}") from exc
    if resp.status_code != 200:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text.strip().splitlines()[0] if resp.text.strip() else resp.reason_phrase
        raise _fail(f"{server} answered {resp.status_code}: {message}")
    doc: dict[str, Any] = resp.json()
    return doc


def _short(ref: str) -> str:
    """``repo@sha256:`` and 12 hex digits: enough to tell images apart in a table (JSON/CSV have all)."""
    name, _, digest = ref.rpartition("@")
    algo, _, hexa = digest.partition(":")
    return f"{name}@{algo}:{hexa[:12]}"


def _table(page: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from hallmark.explore.output import exposure_text, finding_text

    view = page["view"]
    table = Table(show_lines=False, pad_edge=False)
    first = ["Image", "Runs in"] if view == "images" else ["Workload", "Exposure", "Image"]
    for name in [*first, "Findings", "Source (commit)", "Run", "Owner", "Grade"]:
        table.add_column(name, overflow="fold")
    for row in page["rows"]:
        findings = row.get("findings") or []
        shown = ", ".join(finding_text(f) for f in findings[:3])
        more = row.get("finding_count", 0) - min(3, len(findings))
        shown += f" +{more}" if more > 0 else ""
        src = row.get("source") or {}
        source = f"{src.get('repository') or '-'} ({(src.get('commit') or '-')[:12]})" if src else "-"
        if src.get("verified"):
            source += " verified"
        run = src.get("run_url") or src.get("run_id") or "-"
        owner = (row.get("owner") or {}).get("name") or "-"
        if view == "images":
            n, exposed = row.get("workload_count", 0), row.get("exposed_count", 0)
            cells = [_short(row["image"]["ref"]), f"{n} workload(s), {exposed} exposed" if n else "not running"]
        else:
            w = row["workload"]
            exposure = "; ".join(exposure_text(p) for p in w.get("exposure") or []) or "-"
            cells = [f"{w['cluster']}/{w['namespace']}/{w['kind']}/{w['name']}", exposure, _short(row["image"]["ref"])]
        table.add_row(*cells, shown or "-", source, run, owner, row.get("grade") or "unknown")
    Console().print(table)
    if page.get("next_cursor"):
        typer.echo(f"more rows: --cursor {page['next_cursor']}", err=True)


def explore_cmd(
    exposed: Annotated[bool | None, typer.Option("--exposed/--not-exposed", help="Internet-exposed workloads.")] = None,
    severity: Annotated[
        str | None, typer.Option("--severity", help="critical, high, medium, low: at or above.")
    ] = None,
    kev: Annotated[bool | None, typer.Option("--kev/--not-kev", help="Findings in CISA KEV.")] = None,
    fix_available: Annotated[
        bool | None, typer.Option("--fix-available/--no-fix", help="Findings with a fixed version.")
    ] = None,
    cve: Annotated[str | None, typer.Option("--cve", help="An advisory id or any alias (CVE, GHSA, DSA...).")] = None,
    package: Annotated[
        str | None, typer.Option("--package", help="NAME or NAME@RANGE, e.g. openssl@<3.0.7 or jinja2@>=2,<2.10.1.")
    ] = None,
    grade: Annotated[str | None, typer.Option("--grade", help="Health grades, e.g. D,E,F (or unknown).")] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="Cluster name (as reported).")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Kubernetes namespace.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Catalog owner (team or user).")] = None,
    source_repo: Annotated[
        str | None, typer.Option("--source-repo", help="Source repository URL, host/org/repo or org/repo.")
    ] = None,
    images: Annotated[bool, typer.Option("--images", help="One row per image instead of per workload.")] = False,
    running: Annotated[
        bool | None, typer.Option("--running/--not-running", help="With --images: run by a workload or not.")
    ] = None,
    include_suppressed: Annotated[bool, typer.Option("--include-suppressed", help="VEX-suppressed too.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="Rows per page (1-1000).")] = 100,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Next page (printed after a full page).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table, json or csv.")] = "table",
    server: Annotated[
        str | None, typer.Option("--server", help="Ask this server's API instead of the data folder.")
    ] = None,
    token_stdin: Annotated[bool, typer.Option("--token-stdin", help="Read the API token from stdin.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify the server's TLS certificate.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Workloads (or images) by exposure, findings, build source, owner and grade.

    Examples: hallmark explore --exposed --severity critical; hallmark explore --cve CVE-2024-3094;
    hallmark explore --images --source-repo github.com/acme/shop --running.
    """
    if output not in ("table", "json", "csv"):
        raise _fail(f"--output: expected table, json or csv, got {output!r}")
    bools = {"exposed": exposed, "kev": kev, "fix_available": fix_available, "running": running}
    params: dict[str, str] = {k: str(v).lower() for k, v in bools.items() if v is not None}
    texts = {
        "severity": severity,
        "cve": cve,
        "package": package,
        "grade": grade,
        "cluster": cluster,
        "namespace": namespace,
        "owner": owner,
        "source_repo": source_repo,
        "cursor": cursor,
    }
    params |= {k: v for k, v in texts.items() if v is not None}
    params["limit"] = str(limit)
    if images:
        params["view"] = "images"
    if include_suppressed:
        params["include_suppressed"] = "true"
    if server:
        secret = sys.stdin.readline().strip() if token_stdin else os.environ.get("HALLMARK_TOKEN")
        page = _remote(params, server, secret or None, insecure)
    else:
        if token_stdin:
            raise _fail("--token-stdin needs --server (the data folder is read directly)")
        page = _local(params, data_dir, config)
    if output == "json":
        typer.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC).decode())
    elif output == "csv":
        from hallmark.explore.output import to_csv

        sys.stdout.write(to_csv(page["rows"], page["view"]))
        if page.get("next_cursor"):
            typer.echo(f"more rows: --cursor {page['next_cursor']}", err=True)
    else:
        _table(page)


def register(app: typer.Typer) -> None:
    app.command("explore")(explore_cmd)
