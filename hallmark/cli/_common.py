"""Options and helpers shared by CLI commands (one data folder for every command)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from hallmark.config import Config

DataDirOption = Annotated[
    str | None,
    typer.Option("--data-dir", envvar="HALLMARK_DATA_DIR", help="Data folder (default ./.hallmark-data)."),
]
ConfigOption = Annotated[
    str | None, typer.Option("--config", envvar="HALLMARK_CONFIG", help="TOML configuration file.")
]


def get_config(data_dir: str | None = None, config_file: str | None = None, **overrides: object) -> Config:
    """The configuration (imported here: pydantic's models cost ~0.1 s, which ``--help`` and
    commands that need no configuration should not pay)."""
    from hallmark.config import ConfigError, load_config

    ov: dict[tuple[str, ...], object] = {("data_dir",): data_dir}
    for key, value in overrides.items():
        ov[tuple(key.split("__"))] = value
    try:
        return load_config(config_file, ov)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
