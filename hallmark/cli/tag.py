"""``hallmark tag history REPO:TAG`` and ``hallmark tag restore REPO:TAG DIGEST`` (the time machine).

They work on the data folder, like the other administrative commands: same checks as the API
(a restore needs a digest the tag held within the repository's window, whose manifest still
exists), recorded in the tag history and the audit log with actor ``cli``.
"""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config

tag_app = typer.Typer(no_args_is_help=True, help="Tags: history and restore (the time machine).")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _split(ref: str) -> tuple[str, str]:
    from hallmark.registry.names import valid_name, valid_tag

    repo, sep, tag = ref.rpartition(":")
    if not sep or not valid_name(repo) or not valid_tag(tag):
        raise _fail(f"{ref!r} is not REPO:TAG")
    return repo, tag


@tag_app.command("history")
def history_cmd(
    ref: Annotated[str, typer.Argument(help="REPO:TAG")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Every move and removal of a tag, newest first, and the digests it can be restored to."""
    from hallmark.app import Hallmark
    from hallmark.lifecycle.tags import history

    repo, tag = _split(ref)
    hm = Hallmark.open(get_config(data_dir, config))
    try:
        if not hm.meta.repo_exists(repo):
            raise _fail(f"repository {repo} not found")
        doc = history(hm.meta, hm.config, repo, tag)
    finally:
        hm.close()
    if doc["current"] is None and not doc["entries"]:
        raise _fail(f"{repo}:{tag} does not exist and has no history")
    if as_json:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC).decode())
        return
    typer.echo(f"{repo}:{tag} -> {doc['current'] or '(no tag)'}")
    for e in doc["entries"]:
        move = f"{e['old_digest'] or '-'} -> {e['new_digest'] or '-'}"
        typer.echo(f"{e['at']:%Y-%m-%d %H:%M:%S}  {e['action']:<9} {e['actor']:<16} {move}")
    window = doc["time_machine"]
    for r in doc["restorable"]:
        typer.echo(f"restorable: {r['digest']} (until {r['restorable_until']:%Y-%m-%d %H:%M:%S} UTC)")
    if not doc["restorable"]:
        typer.echo(f"nothing to restore within the time-machine window ({window['seconds']} s, {window['from']})")


@tag_app.command("restore")
def restore_cmd(
    ref: Annotated[str, typer.Argument(help="REPO:TAG")],
    digest: Annotated[str, typer.Argument(help="The digest the tag held, e.g. sha256:...")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Move a tag back to a digest it held within the repository's time-machine window."""
    from hallmark.access.service import AccessService
    from hallmark.app import Hallmark
    from hallmark.digest import is_digest
    from hallmark.lifecycle.tags import restore
    from hallmark.metadata.history import TagRestoreRefused

    repo, tag = _split(ref)
    if not is_digest(digest):
        raise _fail(f"{digest!r} is not a digest")
    cfg = get_config(data_dir, config)
    hm = Hallmark.open(cfg)
    access = AccessService.for_metadata(cfg, hm.meta)
    try:
        change = restore(hm.meta, cfg, repo, tag, digest, "cli")
        if change.changed:
            access.audit.record("cli", "tag.restore", repo, digest, detail={"tag": tag, "from": change.old})
    except TagRestoreRefused as exc:
        raise _fail(str(exc)) from exc
    finally:
        access.audit.flush()
        hm.close()
    if change.changed:
        typer.echo(f"{repo}:{tag}: {change.old or '(no tag)'} -> {digest}")
    else:
        typer.echo(f"{repo}:{tag} already points at {digest}")


def register(app: typer.Typer) -> None:
    app.add_typer(tag_app, name="tag")
