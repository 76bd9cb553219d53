"""Options and helpers shared by CLI commands (one data folder for every command)."""

from __future__ import annotations

from typing import Annotated

import typer

from hallmark.config import Config, ConfigError, load_config

DataDirOption = Annotated[
    str | None,
    typer.Option("--data-dir", envvar="HALLMARK_DATA_DIR", help="Data folder (default ./.hallmark-data)."),
]
ConfigOption = Annotated[
    str | None, typer.Option("--config", envvar="HALLMARK_CONFIG", help="TOML configuration file.")
]


def get_config(data_dir: str | None = None, config_file: str | None = None, **overrides: object) -> Config:
    ov: dict[tuple[str, ...], object] = {("data_dir",): data_dir}
    for key, value in overrides.items():
        ov[tuple(key.split("__"))] = value
    try:
        return load_config(config_file, ov)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
