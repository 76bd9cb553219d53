"""``hallmark db update|status`` and ``hallmark worker``: advisory data and background jobs from the shell."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from hallmark import logs
from hallmark.cli._common import ConfigOption, DataDirOption, get_config
from hallmark.cli._output import JsonOption, print_json, print_table
from hallmark.cli._update_view import per_source, print_update_summary, update_progress, when

db_app = typer.Typer(no_args_is_help=True, help="Advisory database and rule bundles.")


@db_app.command("update")
def db_update(
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            help="Offline: a folder (or file:// URL) in the feeds' layout (osv/<Ecosystem>/all.zip, debian/, "
            "alpine/, kev/, endoflife/, rules); without it the live feeds are fetched.",
        ),
    ] = None,
    as_json: Annotated[bool, JsonOption] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Fetch advisory feeds, validate them and switch to the new set atomically; queues re-matching."""
    from hallmark.app import Hallmark
    from hallmark.pipeline.advisory_sets import UpdateError, update

    cfg = get_config(data_dir, config)
    hm = Hallmark.open(cfg)
    started = time.monotonic()
    try:
        with update_progress() as progress:
            record = update(hm.pipeline, mirror, progress)
    except UpdateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        hm.close()
    record["seconds"] = round(time.monotonic() - started, 1)
    if as_json:
        print_json(record)
        return
    print_update_summary(record)


@db_app.command("status")
def db_status(
    as_json: Annotated[bool, JsonOption] = False, data_dir: DataDirOption = None, config: ConfigOption = None
) -> None:
    """Show the active advisory set and the import history."""
    from hallmark.app import Hallmark

    hm = Hallmark.open(get_config(data_dir, config))
    try:
        history = hm.pipeline.store.advisory_set_history()
    finally:
        hm.close()
    if as_json:
        print_json(history)
        return
    rows = []
    for h in history:
        src = h["sources"]
        rows.append(
            (
                h["id"],
                "active" if h["active"] else "",
                when(src.get("imported_at") or h["created_at"]),
                f"{src.get('advisories', 0):,}",
                ", ".join(f"{label} {n:,}" for label, n, _ in per_source(src.get("stats") or [], collapse=True)),
                src.get("base"),
            )
        )
    print_table(
        ("SET", "STATE", "IMPORTED", "ADVISORIES", "SOURCES", "FROM"),
        rows,
        empty="no advisory set yet: run `hallmark db update` (live feeds) or `hallmark db update --mirror DIR`",
    )


def worker(
    threads: Annotated[int, typer.Option("--threads", min=1, max=64)] = 1,
    once: Annotated[bool, typer.Option("--once", help="Run queued jobs, then exit.")] = False,
    metrics_listen: Annotated[
        str | None,
        typer.Option("--metrics-listen", help="HOST:PORT serving this worker's /metrics (no credentials)."),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run pipeline jobs (index, match, re-match) from the shared queue; scale out by starting more."""
    from hallmark.app import Hallmark
    from hallmark.pipeline.runtime import run_standalone

    cfg = get_config(data_dir, config)
    logs.setup(cfg.server.log_format)
    hm = Hallmark.open(cfg)
    if metrics_listen:  # index and match durations are observed here, not in the API servers
        from hallmark import metrics

        try:
            metrics.serve_in_thread(metrics_listen, hm.meta)
        except (OSError, ValueError) as exc:
            hm.close()
            typer.echo(f"error: cannot serve metrics on {metrics_listen}: {exc}", err=True)
            raise typer.Exit(2) from None
    from hallmark.mirror.sync_jobs import install

    install(hm)  # repository mirror runs are jobs of the same queue
    try:
        n = run_standalone(hm.pipeline, threads, once)
    finally:
        hm.close()
    if once:
        typer.echo(f"ran {n} job(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command("worker")(worker)
