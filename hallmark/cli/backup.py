"""``hallmark backup DEST`` / ``hallmark restore SRC``: the embedded default's data, safely copied.

See :mod:`hallmark.backup` for what a backup holds; PostgreSQL + S3: docs/operations.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config
from hallmark.cli._output import human_size


def backup(
    dest: Annotated[Path, typer.Argument(help="New (or empty) folder to write the backup into.")],
    link: Annotated[
        bool, typer.Option("--link", help="Hard-link blobs instead of copying them (same filesystem only).")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Back up the data folder: a consistent database snapshot, every blob it references (verified),
    keys and configuration. Safe while the server runs."""
    from hallmark.backup import BackupError
    from hallmark.backup import backup as run_backup

    cfg = get_config(data_dir, config)
    try:
        summary = run_backup(cfg, dest, link=link, progress=lambda msg: typer.echo(f"backup: {msg}", err=True))
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    how = f", {summary.linked} hard-linked" if summary.linked else ""
    typer.echo(
        f"backed up {cfg.data_path} to {dest}: database {human_size(summary.database_bytes)}, "
        f"{summary.blobs} blob(s) {human_size(summary.blob_bytes)}{how}, {summary.files} data file(s)"
    )


def restore(
    src: Annotated[Path, typer.Argument(help="A folder written by `hallmark backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the contents of a data folder that is not empty.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Restore a backup into the data folder (which must be empty unless --force); every digest is
    checked first. Run it with the server stopped."""
    from hallmark.backup import BackupError
    from hallmark.backup import restore as run_restore

    cfg = get_config(data_dir, config)
    try:
        summary = run_restore(cfg, src, force=force, progress=lambda msg: typer.echo(f"restore: {msg}", err=True))
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"restored {src} into {cfg.data_path}: database {human_size(summary.database_bytes)}, "
        f"{summary.blobs} blob(s) {human_size(summary.blob_bytes)}, {summary.files} data file(s)"
    )


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
