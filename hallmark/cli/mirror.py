"""``hallmark mirror add|list|run|status|remove``: repository mirrors on the data folder.

Same definitions and runs as ``/api/v1/mirrors`` (actor ``cli``). ``run`` copies now, in this
process, and prints the counts; ``--queue`` leaves the run to the server's workers instead.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config
from hallmark.cli._output import JsonOption, print_json, print_table

if TYPE_CHECKING:
    from hallmark.app import Hallmark
    from hallmark.mirror.definitions import Mirror, MirrorStore

mirror_app = typer.Typer(no_args_is_help=True, help="Repository mirrors: copy a remote repository on a schedule.")


def _open(data_dir: str | None, config: str | None) -> tuple[Hallmark, MirrorStore]:
    from hallmark.app import Hallmark
    from hallmark.mirror.definitions import MirrorStore

    hm = Hallmark.open(get_config(data_dir, config))
    return hm, MirrorStore(hm.meta, hm.config.data_path)


def _find(store: MirrorStore, ref: str) -> Mirror:
    m = store.get(ref)
    if m is None:
        typer.echo(f"error: no mirror {ref!r} (see `hallmark mirror list`)", err=True)
        raise typer.Exit(2)
    return m


@mirror_app.command("add")
def add_cmd(
    source: Annotated[str, typer.Argument(help="HOST[:PORT]/REPOSITORY to copy from (--push: the local repository)")],
    destination: Annotated[
        str, typer.Argument(help="Repository in Hallmark to copy into (--push: the remote HOST[:PORT]/REPOSITORY)")
    ],
    push: Annotated[
        bool, typer.Option("--push", help="Push mirror: replicate approved images of SOURCE (local) to DESTINATION.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="Mirror name (default: from the destination).")] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Tag glob, or regex:RE (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Tag glob, or regex:RE (repeatable).")] = None,
    platform: Annotated[
        list[str] | None,
        typer.Option("--platform", help="os/arch or os/arch/variant to copy from indexes (repeatable)."),
    ] = None,
    interval: Annotated[int | None, typer.Option("--interval", help="Run every N seconds (>= 60).")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="Run on a cron schedule, e.g. '0 3 * * *'.")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u", help="Source (--push: remote) user.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the registry password.")] = False,
    no_referrers: Annotated[bool, typer.Option("--no-referrers", help="Do not copy signatures, SBOMs.")] = False,
    delete_remote: Annotated[
        bool,
        typer.Option(
            "--delete-remote",
            help="--push only: delete from the remote what the mirror pushed once it is retired or deleted here.",
        ),
    ] = False,
    robot: Annotated[str | None, typer.Option("--robot", help="Robot the mirror pushes as.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain HTTP to the source (or remote).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per upstream request.")] = 60.0,
    as_json: Annotated[bool, JsonOption] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Define a mirror (the password is read from stdin or HALLMARK_MIRROR_PASSWORD, never an argument)."""
    from hallmark.mirror.definitions import MirrorInputError, validate

    password = sys.stdin.readline().rstrip("\n") if password_stdin else os.environ.get("HALLMARK_MIRROR_PASSWORD")
    doc: dict[str, Any] = {
        "direction": "push" if push else "pull",
        "source": destination if push else source,
        "destination": source if push else destination,
        "name": name,
        "tags": {"include": include or [], "exclude": exclude or []},
        "platforms": platform or None,
        "schedule": {k: v for k, v in (("interval_seconds", interval), ("cron", cron)) if v is not None},
        "username": username,
        "password": password if username else None,
        "copy_referrers": not no_referrers,
        "delete_remote": delete_remote,
        "robot": robot,
        "insecure": insecure,
        "timeout_seconds": timeout,
    }
    hm, store = _open(data_dir, config)
    try:
        m = store.create(validate(doc), "cli")
    except MirrorInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        hm.close()
    if as_json:
        print_json(m.to_json())
    else:
        typer.echo(f"mirror {m.name} (id {m.id}): {_arrow(m)}")


def _arrow(m: Mirror) -> str:
    """Which way the images go."""
    if not m.push:
        return f"{m.source} -> {m.destination}"
    return f"{m.destination} -> {m.source} (push{', delete remote' if m.delete_remote else ''})"


@mirror_app.command("list")
def list_cmd(
    as_json: Annotated[bool, JsonOption] = False, data_dir: DataDirOption = None, config: ConfigOption = None
) -> None:
    """List mirrors with their schedule and last run."""
    hm, store = _open(data_dir, config)
    try:
        docs = []
        for m in store.all():
            doc = m.to_json()
            runs = store.runs(m.id, 1)
            doc["last_run"] = runs[0] if runs else None
            docs.append(doc)
    finally:
        hm.close()
    if as_json:
        print_json({"mirrors": docs})
        return
    print_table(
        ("ID", "NAME", "SOURCE", "DESTINATION", "SCHEDULE", "LAST RUN"),
        [
            (
                d["id"],
                d["name"],
                d["destination"] if d["direction"] == "push" else d["source"],
                f"{d['source']} (push)" if d["direction"] == "push" else d["destination"],
                d["schedule"]["cron"]
                or (f"every {d['schedule']['interval_seconds']}s" if d["schedule"]["interval_seconds"] else "manual"),
                _run_line(d["last_run"]) if d["last_run"] else "never",
            )
            for d in docs
        ],
        empty="no mirrors yet: hallmark mirror add HOST/REPO DESTINATION",
    )


def _run_line(r: dict[str, Any]) -> str:
    deleted = f", {r['deleted']} deleted" if r.get("deleted") else ""
    return f"{r['state']} ({r['copied']} copied, {r['skipped']} skipped{deleted}, {r['failed']} failed)"


@mirror_app.command("run")
def run_cmd(
    mirror: Annotated[str, typer.Argument(help="Mirror name or id")],
    queue: Annotated[bool, typer.Option("--queue", help="Queue it for the server's workers instead.")] = False,
    as_json: Annotated[bool, JsonOption] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Copy what changed now; exit 1 when some tags failed."""
    from hallmark.mirror.sync_jobs import queue_run, run_now

    hm, store = _open(data_dir, config)
    try:
        m = _find(store, mirror)
        run_id, _ = queue_run(hm, m, "manual", enqueue=queue)
        if queue:
            result: dict[str, Any] = {"run": run_id, "state": "queued"}
        else:
            result = run_now(hm, run_id)
            doc = store.run(run_id)
            result["tags"] = (doc or {}).get("tags", [])
    finally:
        hm.close()
    if as_json:
        print_json(result)
    else:
        for t in result.get("tags", []):
            why = t["error"] or t["note"]
            typer.echo(f"{t['state']:8} {t['tag']}" + (f": {why}" if why else ""))
        typer.echo(f"run {run_id}: {result['state']}" + (f" ({_run_line(result)})" if "copied" in result else ""))
        if result.get("error"):
            typer.echo(f"error: {result['error']}", err=True)
    if result["state"] in ("failed", "partial", "retrying"):
        raise typer.Exit(1)


@mirror_app.command("status")
def status_cmd(
    mirror: Annotated[str, typer.Argument(help="Mirror name or id")],
    limit: Annotated[int, typer.Option("--limit", help="How many runs.")] = 5,
    as_json: Annotated[bool, JsonOption] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Recent runs of a mirror, and the tags of the last one."""
    hm, store = _open(data_dir, config)
    try:
        m = _find(store, mirror)
        runs = store.runs(m.id, limit)
        last = store.run(runs[0]["id"]) if runs else None
    finally:
        hm.close()
    if as_json:
        print_json({"mirror": m.to_json(), "runs": runs, "last_run": last})
        return
    typer.echo(f"mirror {m.name}: {_arrow(m)}; next run {m.next_run_at or 'manual'}")
    print_table(
        ("RUN", "STATE", "ATTEMPT", "COPIED", "SKIPPED", "DELETED", "FAILED", "BYTES", "STARTED", "SECONDS", "ERROR"),
        [
            (
                r["id"],
                r["state"],
                r["attempt"],
                r["copied"],
                r["skipped"],
                r["deleted"],
                r["failed"],
                r["bytes"],
                r["started_at"],
                r["seconds"],
                r["error"],
            )
            for r in runs
        ],
        empty="no runs yet: hallmark mirror run " + m.name,
    )
    if last:
        print_table(
            ("TAG", "STATE", "DIGEST", "BYTES", "BLOBS COPIED", "ERROR"),
            [
                (t["tag"], t["state"], t["digest"], t["bytes"], t["blobs_copied"], t["error"] or t["note"])
                for t in last["tags"]
            ],
            empty="",
        )


@mirror_app.command("remove")
def remove_cmd(
    mirror: Annotated[str, typer.Argument(help="Mirror name or id")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove a mirror and its run history (mirrored images stay)."""
    hm, store = _open(data_dir, config)
    try:
        m = _find(store, mirror)
        store.delete(m.id)
    finally:
        hm.close()
    typer.echo(f"removed mirror {m.name}")


def register(app: typer.Typer) -> None:
    app.add_typer(mirror_app, name="mirror")
