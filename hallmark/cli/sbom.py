"""``hallmark sbom REF``: index an image from a registry, an OCI layout or a docker-archive and print its SBOM."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from hallmark.cli._registry import (
    REF_HELP,
    CredsOption,
    InsecureOption,
    PasswordStdinOption,
    UsernameOption,
    open_image,
)
from hallmark.index import FileCache, index_source
from hallmark.index.inflate import spare_core
from hallmark.index.sbom import render, render_table
from hallmark.oci import OciError


class Format(StrEnum):
    cyclonedx = "cyclonedx"
    spdx = "spdx"
    json = "json"
    table = "table"


def sbom(
    ref: Annotated[str, typer.Argument(help=REF_HELP)],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    insecure: InsecureOption = False,
    creds: CredsOption = None,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
    platform: Annotated[
        str | None, typer.Option("--platform", help="os/arch or os/arch/variant to pick from an index (linux/amd64).")
    ] = None,
    cache_dir: Annotated[
        str | None,
        typer.Option("--cache-dir", envvar="HALLMARK_INDEX_CACHE", help="Reuse per-layer results from this folder."),
    ] = None,
) -> None:
    """Read an image's layers once and list every OS and language package in it."""
    err = Console(stderr=True)
    try:
        source = open_image(
            ref, insecure=insecure, platform=platform, creds=creds, username=username, password_stdin=password_stdin
        )
    except OciError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    cache = FileCache(cache_dir) if cache_dir else None
    try:
        if sys.stderr.isatty():  # a bar only for a person watching, never in logs or pipes
            with Progress(
                TextColumn("indexing"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("index", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total or None)

                result = index_source(source, cache=cache, progress=progress, inflate_apart=spare_core())
        else:
            result = index_source(source, cache=cache, inflate_apart=spare_core())
    finally:
        source.close()
    if result.status != "done":
        typer.echo(result.failure, err=True)
        raise typer.Exit(1)
    if fmt == Format.table:
        if output:
            with open(output, "w") as f:
                render_table(result, source.name, Console(file=f, width=200))
        else:
            render_table(result, source.name, Console())
        return
    text = render(result, source.name, fmt.value)
    if output:
        from hallmark.cli._output import write_output

        write_output(output, text)
    else:
        typer.echo(text)


def register(app: typer.Typer) -> None:
    app.command("sbom")(sbom)
