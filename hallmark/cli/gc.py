"""``hallmark gc``: remove blobs that no manifest uses any more."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be removed.")] = False,
    grace_seconds: Annotated[
        int, typer.Option("--grace-seconds", min=0, help="Keep blobs linked or created more recently than this.")
    ] = 3600,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Garbage-collect unreferenced blobs, and manifests that tags left more than the time-machine
    window ago (safe while the server runs)."""
    from hallmark.app import Hallmark
    from hallmark.lifecycle.tags import forget, gc_policy
    from hallmark.registry.gc import collect

    hm = Hallmark.open(get_config(data_dir, config))
    try:
        result = collect(hm.meta, hm.blobs, grace_seconds, dry_run, gc_policy(hm.meta, hm.config))
        if not dry_run:
            forget(result.manifests, hm.pipeline.on_delete)
    finally:
        hm.close()
    typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())


def register(app: typer.Typer) -> None:
    app.command("gc")(gc)
