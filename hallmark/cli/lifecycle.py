"""``hallmark lifecycle run|status``: the periodic jobs, now (scripts and tests) or their last runs."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config

lifecycle_app = typer.Typer(no_args_is_help=True, help="Periodic lifecycle jobs (the scheduler).")


@lifecycle_app.command("run")
def run(
    all_jobs: Annotated[bool, typer.Option("--all", help="Run every job, due or not.")] = False,
    job: Annotated[
        list[str] | None, typer.Option("--job", help="Only this job, now, due or not (repeatable).")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run every due periodic job once, now (a job another worker is running is skipped)."""
    from hallmark.app import Hallmark
    from hallmark.lifecycle import jobs  # noqa: F401  (registers the jobs)
    from hallmark.lifecycle.scheduler import JOBS, Scheduler

    unknown = sorted(set(job or ()) - set(JOBS))
    if unknown:
        typer.echo(f"error: unknown job {', '.join(unknown)} (known: {', '.join(sorted(JOBS))})", err=True)
        raise typer.Exit(2)
    hm = Hallmark.open(get_config(data_dir, config))
    try:
        results = Scheduler(hm.meta).run_due(hm, force=all_jobs or bool(job), only=set(job) if job else None)
    finally:
        hm.close()
    typer.echo(orjson.dumps({"ran": results}, option=orjson.OPT_INDENT_2, default=str).decode())
    if any(r["status"] != "ok" for r in results):
        raise typer.Exit(1)


@lifecycle_app.command("status")
def status(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """When each periodic job last ran, how it ended, and when it runs next."""
    from hallmark.app import Hallmark
    from hallmark.lifecycle.scheduler import Scheduler

    hm = Hallmark.open(get_config(data_dir, config))
    try:
        rows = Scheduler(hm.meta).status()
    finally:
        hm.close()
    typer.echo(orjson.dumps({"jobs": rows}, option=orjson.OPT_INDENT_2, default=str).decode())


def register(app: typer.Typer) -> None:
    app.add_typer(lifecycle_app, name="lifecycle")
