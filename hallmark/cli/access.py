"""``hallmark user|robot|permission|audit``: manage access on the data folder directly (no server needed)."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config

if TYPE_CHECKING:
    from hallmark.access.service import AccessService


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


ACTOR = _actor()


@contextmanager
def _service(data_dir: str | None, config: str | None) -> Iterator[AccessService]:
    from hallmark.access.service import AccessService, Conflict, NotFound
    from hallmark.metadata.datafolder import write_record
    from hallmark.metadata.db import make_engine, migrate

    cfg = get_config(data_dir, config)
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    write_record(cfg.data_path, cfg.database_url)
    svc = AccessService(cfg, engine)
    try:
        yield svc
    except (Conflict, NotFound, ValueError) as exc:
        kind = {Conflict: "already exists", NotFound: "not found"}.get(type(exc), "")
        typer.echo(f"error: {exc} {kind}".rstrip(), err=True)
        raise typer.Exit(1) from exc
    finally:
        svc.audit.flush()
        engine.dispose()


def _read_password(from_stdin: bool) -> tuple[str, bool]:
    """(password, generated): from stdin, or a random one printed once."""
    from hallmark.access.crypto import random_password

    if from_stdin:
        pw = sys.stdin.readline().rstrip("\n")
        if not pw:
            typer.echo("error: empty password on stdin", err=True)
            raise typer.Exit(2)
        return pw, False
    return random_password(), True


user_app = typer.Typer(no_args_is_help=True, help="Local users.")
robot_app = typer.Typer(no_args_is_help=True, help="Robot accounts with scoped tokens.")
perm_app = typer.Typer(no_args_is_help=True, help="Roles on namespaces, repositories and the catalog.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")]


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[list[str] | None, typer.Option("--role", help="Catalog role (repeatable).")] = None,
    password_stdin: PasswordStdin = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a user; without --password-stdin a random password is printed once."""
    pw, generated = _read_password(password_stdin)
    with _service(data_dir, config) as svc:
        svc.add_user(ACTOR, name, pw, role or [])
    typer.echo(f"created user {name}" + (f"; password: {pw}" if generated else ""))


@user_app.command("list")
def user_list(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """List users and robots."""
    with _service(data_dir, config) as svc:
        for p in svc.store.list_principals():
            typer.echo(f"{p.name}\t{p.kind}\t{'disabled' if p.disabled else 'active'}")


@user_app.command("passwd")
def user_passwd(
    name: str, password_stdin: PasswordStdin = False, data_dir: DataDirOption = None, config: ConfigOption = None
) -> None:
    """Set a user's password (random and printed once unless --password-stdin)."""
    pw, generated = _read_password(password_stdin)
    with _service(data_dir, config) as svc:
        svc.set_password(ACTOR, name, pw)
    typer.echo(f"password changed for {name}" + (f": {pw}" if generated else ""))


@robot_app.command("create")
def robot_create(
    name: str,
    scope: Annotated[list[str], typer.Option("--scope", help="repository:<name|ns/*>:pull,push,delete")],
    expires_days: Annotated[float, typer.Option("--expires-days", help="Token lifetime in days.")] = 90,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a robot account and print its token (shown only this once)."""
    with _service(data_dir, config) as svc:
        tid, token = svc.create_robot(ACTOR, name, scope, expires_days)
    typer.echo(f"robot {name} token {tid}:\n{token}")


@robot_app.command("revoke")
def robot_revoke(name: str, data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Revoke all tokens of a robot and disable it (takes effect on the next request)."""
    with _service(data_dir, config) as svc:
        n = svc.revoke_robot(ACTOR, name)
    typer.echo(f"revoked {n} token(s) of {name}")


@perm_app.command("add")
def perm_add(
    subject: str,
    role: str,
    repo: Annotated[str | None, typer.Option("--repo")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace")] = None,
    team: Annotated[bool, typer.Option("--team", help="SUBJECT is a team.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Grant ROLE (read, write, delete, admin; or a catalog role without --repo/--namespace)."""
    kind, scope = ("repository", repo) if repo else ("namespace", namespace) if namespace else ("catalog", "")
    with _service(data_dir, config) as svc:
        svc.grant(ACTOR, "team" if team else "principal", subject, kind, scope or "", role)
    typer.echo(f"granted {role} on {kind} {scope or ''} to {subject}".replace("  ", " "))


@audit_app.command("verify")
def audit_verify(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Check the hash chain; exit 1 and name the first broken entry if it was altered."""
    with _service(data_dir, config) as svc:
        res = svc.audit.verify()
    if res.ok:
        typer.echo(f"audit log intact: {res.checked} entries, head {res.head_hash}")
        return
    typer.echo(f"audit log BROKEN at entry {res.first_bad_seq}: {res.reason} ({res.checked} entries ok)", err=True)
    raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default stdout).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Write the audit log as JSON Lines (with chain hashes)."""
    with _service(data_dir, config) as svc:
        out = output.open("wb") if output else sys.stdout.buffer
        try:
            for line in svc.audit.export():
                out.write(line)
        finally:
            if output:
                out.close()
            else:
                out.flush()


@audit_app.command("prune")
def audit_prune(
    days: Annotated[int, typer.Option("--older-than-days")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete entries older than N days, keeping a checkpoint so the rest still verifies."""
    with _service(data_dir, config) as svc:
        n = svc.audit.prune(days)
    typer.echo(f"pruned {n} entries")


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(robot_app, name="robot")
    app.add_typer(perm_app, name="permission")
    app.add_typer(audit_app, name="audit")
