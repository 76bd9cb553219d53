"""``hallmark catalog list|promote|deprecate|retire``: the catalog service on the data folder.

Same gates, approval stamp and audit entries as the API (actor ``cli``), for operators and scripts
that run next to the database rather than through the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config
from hallmark.cli._output import JsonOption, print_json, print_table

if TYPE_CHECKING:
    from hallmark.app import Hallmark

catalog_app = typer.Typer(no_args_is_help=True, help="Image catalog: stages and promotion.")


@catalog_app.command("list")
def list_cmd(
    stage: Annotated[str | None, typer.Option("--stage", help="staging, approved, deprecated or retired")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Search name, description, owner.")] = None,
    grade: Annotated[str | None, typer.Option("--grade", help="Health grades to keep, e.g. A,B (or unknown).")] = None,
    as_json: Annotated[bool, JsonOption] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List catalogued images (every indexed image; staging unless promoted)."""
    from hallmark.app import Hallmark
    from hallmark.catalog.service import CatalogError, CatalogService

    hm = Hallmark.open(get_config(data_dir, config))
    try:
        entries = CatalogService(hm.pipeline).search(stage, query, None, grade)
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        hm.close()
    if as_json:
        print_json(entries)
        return
    filtered = stage is not None or query is not None or grade is not None
    print_table(
        ("STAGE", "GRADE", "IMAGE", "OWNER", "DESCRIPTION"),
        [
            (e["stage"], e["grade"], f"{e['repository']}@{e['digest']}", e.get("owner"), e.get("description"))
            for e in entries
        ],
        empty="no images match these filters"
        if filtered
        else "no images in the catalog yet: push one with `docker push HOST/REPO:TAG` (indexed, then listed here)",
    )


@catalog_app.command("promote")
def promote_cmd(
    ref: Annotated[str, typer.Argument(help="REPO@DIGEST, or REPO:TAG (the digest the tag points at now)")],
    to: Annotated[str, typer.Option("--to", help="approved, deprecated or retired")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history and audit log).")],
    force: Annotated[bool, typer.Option("--force", help="Approve although advisory data is missing.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Change an image's stage; approval runs the gates and signs the manifest when a key is set."""
    from hallmark.access.service import AccessService
    from hallmark.app import Hallmark
    from hallmark.catalog.service import CatalogError, CatalogService, GateFailed

    cfg = get_config(data_dir, config)
    hm = Hallmark.open(cfg)
    try:
        repo, digest = resolve_ref(hm, ref)
    except typer.Exit:
        hm.close()
        raise
    access = AccessService.for_metadata(cfg, hm.meta)
    try:
        result = CatalogService(hm.pipeline).promote(repo, digest, to, "cli", reason, force=force, audit=access.audit)
    except GateFailed as exc:
        for g in exc.gates:
            typer.echo(f"{'pass' if g.passed else 'FAIL'}  {g.name}: {g.detail}", err=True)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        access.audit.flush()
        hm.close()
    for g in result["gates"]:
        typer.echo(f"pass  {g['name']}: {g['detail']}")
    stamp = f" (signed: {result['signature_digest']})" if result["signature_digest"] else ""
    typer.echo(f"{repo}@{digest}: {result['from']} -> {result['to']}{stamp}")


def resolve_ref(hm: Hallmark, ref: str) -> tuple[str, str]:
    """(repository, digest) of ``REPO@DIGEST`` or ``REPO:TAG``; a tag is resolved now and the digest
    it points at is said, since that image (not the tag) is what changes stage. Bad input: exit 2."""
    from hallmark.digest import is_digest
    from hallmark.registry.names import valid_name, valid_tag

    if "@" in ref:
        repo, _, digest = ref.rpartition("@")
        if not valid_name(repo) or not is_digest(digest):
            typer.echo(f"error: {ref!r} must be REPO@DIGEST or REPO:TAG", err=True)
            raise typer.Exit(2)
        return repo, digest
    repo, sep, tag = ref.rpartition(":")
    if not sep or not valid_name(repo) or not valid_tag(tag):
        typer.echo(f"error: {ref!r} must be REPO@DIGEST or REPO:TAG", err=True)
        raise typer.Exit(2)
    rec = hm.meta.get_manifest(repo, tag, False)
    if rec is None:
        typer.echo(f"error: {repo}:{tag} is not in the registry", err=True)
        raise typer.Exit(2)
    typer.echo(f"{repo}:{tag} is {repo}@{rec.digest}")
    return repo, rec.digest


def _stage_change(
    ref: str, to: str, reason: str, replacement: str | None, data_dir: str | None, config: str | None
) -> None:
    """Deprecate or retire on the data folder: one-line errors, exit 2 for anything refused as bad
    input (unknown image or replacement, a transition the stage does not allow), 1 otherwise."""
    from hallmark.access.service import AccessService
    from hallmark.app import Hallmark
    from hallmark.catalog.service import CatalogError, CatalogService
    from hallmark.digest import is_digest

    repo, sep, digest = ref.rpartition("@")
    if not sep or not repo or not is_digest(digest):
        typer.echo(f"error: {ref!r} must be REPO@DIGEST", err=True)
        raise typer.Exit(2)
    cfg = get_config(data_dir, config)
    hm = Hallmark.open(cfg)
    access = AccessService.for_metadata(cfg, hm.meta)
    try:
        result = CatalogService(hm.pipeline).promote(
            repo, digest, to, "cli", reason, audit=access.audit, replacement=replacement
        )
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2 if exc.status < 500 else 1) from exc
    finally:
        access.audit.flush()
        hm.close()
    instead = result["entry"].get("replacement")
    typer.echo(f"{ref}: {result['from']} -> {result['to']}" + (f" (replacement: {instead})" if instead else ""))


@catalog_app.command("deprecate")
def deprecate_cmd(
    ref: Annotated[str, typer.Argument(help="REPO@DIGEST")],
    replacement: Annotated[str, typer.Option("--replacement", help="What to use instead: REPO@DIGEST or REPO:TAG.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown to everyone who pulls it).")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Deprecate an approved image: pulls still work and carry a warning naming the replacement."""
    _stage_change(ref, "deprecated", reason, replacement, data_dir, config)


@catalog_app.command("retire")
def retire_cmd(
    ref: Annotated[str, typer.Argument(help="REPO@DIGEST")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown to everyone who pulls it).")],
    replacement: Annotated[
        str | None,
        typer.Option("--replacement", help="What to use instead (default: the deprecation's replacement)."),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Retire an approved or deprecated image: its manifest pulls are refused naming the replacement
    (or warned, where the namespace sets retired_pull = warn); its blobs stay pullable."""
    _stage_change(ref, "retired", reason, replacement, data_dir, config)


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")


@catalog_app.command("search")
def search_cmd(
    query: Annotated[str | None, typer.Argument(help="Full text: names, descriptions, labels, package names.")] = None,
    package: Annotated[str | None, typer.Option("--package", help="Package name, e.g. openssl.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Version range, e.g. '<3.0.7' or '>=1,<2'.")] = None,
    purl: Annotated[str | None, typer.Option("--purl", help="Package URL, e.g. pkg:pypi/django.")] = None,
    advisory: Annotated[str | None, typer.Option("--advisory", help="CVE, GHSA, DSA... (aliases too).")] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="staging, approved, deprecated or retired")] = None,
    grade: Annotated[str | None, typer.Option("--grade", help="Health grades to keep, e.g. A,B.")] = None,
    os_release: Annotated[str | None, typer.Option("--os", help="OS release, e.g. debian:12 or alpine.")] = None,
    eol: Annotated[str | None, typer.Option("--eol", help="eol, eol_soon, supported, unknown, true, false")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Owning team or user.")] = None,
    kev: Annotated[str | None, typer.Option("--kev", help="true: a KEV-listed finding; false: none.")] = None,
    fix: Annotated[str | None, typer.Option("--fix-available", help="true: a fixable finding; false: none.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many images (1..1000).")] = 100,
    as_json: Annotated[bool, JsonOption] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Find images by what is inside them; approved first, better grade first, newest first."""
    from hallmark.app import Hallmark
    from hallmark.discovery.search import SearchError, make_query, search

    params = {
        "q": query,
        "package": package,
        "version": version,
        "purl": purl,
        "advisory": advisory,
        "stage": stage,
        "grade": grade,
        "os": os_release,
        "eol": eol,
        "owner": owner,
        "kev": kev,
        "fix_available": fix,
        "limit": str(limit),
    }
    try:
        q = make_query(params)
    except SearchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    cfg = get_config(data_dir, config)
    hm = Hallmark.open(cfg)
    try:
        entries, total = search(hm.meta, q, cfg.lifecycle.eol_soon_days)
    finally:
        hm.close()
    if as_json:
        print_json({"images": entries, "total": total})
        return

    def matched(e: dict[str, Any]) -> str:
        pk = e.get("packages") or []
        fs = e.get("findings") or []
        parts = [f"{p['name']} {p['version']}" for p in pk if isinstance(p, dict)][:3]
        parts += [f"{f['advisory_id']} in {f['package']} {f['version']}" for f in fs if isinstance(f, dict)][:3]
        return ", ".join(parts)

    print_table(
        ("STAGE", "GRADE", "IMAGE", "OS", "EOL", "MATCHED"),
        [
            (e["stage"], e["grade"], f"{e['repository']}@{e['digest']}", e.get("os"), e.get("eol"), matched(e))
            for e in entries
        ],
        empty="no images match these filters",
    )
    if total > len(entries):
        typer.echo(f"{len(entries)} of {total} shown (--limit)", err=True)
