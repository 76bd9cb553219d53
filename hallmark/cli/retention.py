"""``hallmark retention run [--dry-run]``: apply the retention policies now, or say what would go and why."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config

retention_app = typer.Typer(no_args_is_help=True, help="Retention policies of repositories and namespaces.")


@retention_app.command("run")
def run_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be removed, and why.")] = False,
    repository: Annotated[str | None, typer.Option("--repository", help="Only this repository.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print the tags kept, and why.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove the tags no retention rule keeps (recorded in the tag history, restorable in the window)."""
    from hallmark.app import Hallmark
    from hallmark.lifecycle import retention
    from hallmark.registry.names import valid_name

    if repository is not None and not valid_name(repository):
        typer.echo(f"error: invalid repository name {repository!r}", err=True)
        raise typer.Exit(2)
    hm = Hallmark.open(get_config(data_dir, config))
    try:
        plans = retention.run(hm.meta, hm.config, dry_run=dry_run, repository=repository, actor="cli")
    finally:
        hm.close()
    if as_json:
        doc = {"dry_run": dry_run, "repositories": [p.as_dict() for p in plans]}
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC).decode())
        return
    if not plans:
        typer.echo("no retention policy applies")
    for p in plans:
        if p.refused:
            typer.echo(f"{p.repository}: nothing removed: {p.refused} (policy of {p.policy_from})")
        for d in p.remove:
            if dry_run:
                verb = "would remove"
            elif p.refused:
                continue
            else:
                verb = "removed" if d.tag in p.removed else "not removed (the tag moved meanwhile)"
            typer.echo(f"{verb} {p.repository}:{d.tag} {d.digest}: {d.why}")
        if verbose:
            for d in p.decisions:
                if d.keep:
                    typer.echo(f"keep {p.repository}:{d.tag} {d.digest}: {d.why}")


def register(app: typer.Typer) -> None:
    app.add_typer(retention_app, name="retention")
