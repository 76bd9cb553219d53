"""``hallmark db update|status`` and ``hallmark worker``: advisory data and background jobs from the shell."""

from __future__ import annotations

import logging
from typing import Annotated

import orjson
import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config

db_app = typer.Typer(no_args_is_help=True, help="Advisory database and rule bundles.")


@db_app.command("update")
def db_update(
    mirror: Annotated[
        str | None, typer.Option("--mirror", help="Folder (or file:// URL) in the feeds' layout, for air-gapped sites.")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Fetch advisory feeds, validate them and switch to the new set atomically; queues re-matching."""
    from hallmark.app import Hallmark
    from hallmark.pipeline.advisory_sets import UpdateError, update

    cfg = get_config(data_dir, config)
    hm = Hallmark.open(cfg)
    try:
        record = update(hm.pipeline, mirror)
    except UpdateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        hm.close()
    typer.echo(f"advisory set {record['set']} active: {record['advisories']} advisories from {record['base']}")
    for f in record["files"]:
        typer.echo(f"  {f['path']}: {f.get('status')} {f.get('size', '')}")
    eol = record.get("endoflife") or {}
    if eol.get("products"):
        change = "changed: images are re-evaluated" if eol.get("changed") else "unchanged"
        typer.echo(f"end-of-life data: {len(eol['products'])} products, {eol['cycles']} release cycles ({change})")
    for s in record["stats"]:
        skipped = s.get("skipped") or {}
        if skipped:
            typer.echo(f"  {s.get('source', '?')}: skipped {sum(skipped.values())} ({', '.join(skipped)})")


@db_app.command("status")
def db_status(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Show the active advisory set and the import history."""
    from hallmark.app import Hallmark

    hm = Hallmark.open(get_config(data_dir, config))
    try:
        typer.echo(orjson.dumps(hm.pipeline.store.advisory_set_history(), option=orjson.OPT_INDENT_2).decode())
    finally:
        hm.close()


def worker(
    threads: Annotated[int, typer.Option("--threads", min=1, max=64)] = 1,
    once: Annotated[bool, typer.Option("--once", help="Run queued jobs, then exit.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run pipeline jobs (index, match, re-match) from the shared queue; scale out by starting more."""
    from hallmark.app import Hallmark
    from hallmark.pipeline.runtime import run_standalone

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hm = Hallmark.open(get_config(data_dir, config))
    try:
        n = run_standalone(hm.pipeline, threads, once)
    finally:
        hm.close()
    if once:
        typer.echo(f"ran {n} job(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command("worker")(worker)
