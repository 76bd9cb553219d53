"""``hallmark serve``: the registry, API and portal in one process (the embedded default).

The implementation is in :mod:`hallmark.cli._serving`, imported when the command runs: listing
commands (``hallmark --help``) imports this module and should not pay for aiohttp and the rest.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hallmark.cli._common import ConfigOption, DataDirOption


def serve(
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT (default 127.0.0.1:5000).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Processes sharing the port.")] = None,
) -> None:
    """Serve the registry, API and portal (over HTTPS when [server] tls_cert and tls_key are set)."""
    from hallmark.cli._serving import start

    start(listen, data_dir, config, workers)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
