"""``hallmark gc``: remove blobs that no manifest uses any more."""

from __future__ import annotations

from typing import Annotated

import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config
from hallmark.cli._output import JsonOption, human_size, print_json, print_table


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be removed.")] = False,
    grace_seconds: Annotated[
        int, typer.Option("--grace-seconds", min=0, help="Keep blobs linked or created more recently than this.")
    ] = 3600,
    as_json: Annotated[bool, JsonOption] = False,
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
    if as_json:
        print_json(result.as_dict())
        return
    rows = [("manifest", f"{r}@{d}") for r, d in result.manifests]
    rows += [("link", f"{r}@{d}") for r, d in result.unlinked]
    rows += [("blob", d) for d in result.deleted]
    verb = "would remove" if dry_run else "removed"
    print_table(
        ("WHAT", "REMOVED" if not dry_run else "WOULD BE REMOVED"),
        rows,
        empty=f"nothing to collect: every blob is in use or newer than {grace_seconds} s",
    )
    if rows:
        size = human_size(result.freed_bytes) if not dry_run else "-"
        typer.echo(
            f"{verb} {len(result.manifests)} manifest(s), {len(result.unlinked)} link(s), "
            f"{len(result.deleted)} blob(s)" + ("" if dry_run else f"; freed {size}")
        )
    if result.kept:
        typer.echo(f"kept {len(result.kept)} blob(s) linked again while collecting")


def register(app: typer.Typer) -> None:
    app.command("gc")(gc)
