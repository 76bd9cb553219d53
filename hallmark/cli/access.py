"""``hallmark user|robot|permission|audit``: manage access on the data folder directly (no server needed)."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hallmark.cli._common import ConfigOption, DataDirOption, get_config
from hallmark.cli._output import JsonOption, print_json, print_table

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
        raise typer.Exit(2) from exc
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


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


user_app = typer.Typer(no_args_is_help=True, help="Local users.")
robot_app = typer.Typer(no_args_is_help=True, help="Robot accounts with scoped tokens.")
perm_app = typer.Typer(no_args_is_help=True, help="Roles on namespaces, repositories and the catalog.")
token_app = typer.Typer(no_args_is_help=True, help="API and registry tokens of users and robots.")
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


def _grant_text(g: Any) -> str:
    """``administrator`` for a catalog role, ``write on repository apps/web`` otherwise."""
    return g.role if g.scope_kind == "catalog" else f"{g.role} on {g.scope_kind} {g.scope}"


def _grant_doc(g: Any) -> dict[str, Any]:
    return {k: getattr(g, k) for k in ("subject_kind", "subject", "scope_kind", "scope", "role")}


@user_app.command("list")
def user_list(
    as_json: Annotated[bool, JsonOption] = False, data_dir: DataDirOption = None, config: ConfigOption = None
) -> None:
    """List users and robots with their roles (catalog roles and grants on namespaces and repositories)."""
    with _service(data_dir, config) as svc:
        people = svc.store.list_principals()
        grants = svc.store.list_grants()
    roles: dict[str, list[Any]] = {}
    for g in grants:
        if g.subject_kind == "principal":
            roles.setdefault(g.subject, []).append(g)
    if as_json:
        docs = [
            {
                "name": p.name,
                "kind": p.kind,
                "disabled": p.disabled,
                "roles": [_grant_doc(g) for g in roles.get(p.name, [])],
            }
            for p in people
        ]
        print_json(docs)
        return
    print_table(
        ("NAME", "KIND", "STATE", "ROLES"),
        [
            (
                p.name,
                p.kind,
                "disabled" if p.disabled else "active",
                ", ".join(_grant_text(g) for g in roles.get(p.name, [])),
            )
            for p in people
        ],
        empty="no users yet: add one with `hallmark user add NAME --role administrator`",
    )


def _user(svc: AccessService, name: str) -> None:
    p = svc.store.principal(name)
    if p is None or p.kind != "user":
        raise _fail(f"user {name} not found" + (f" ({name} is a {p.kind})" if p is not None else ""))


@user_app.command("delete")
def user_delete(name: str, data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Delete a user with its tokens and grants (audited as user.delete)."""
    with _service(data_dir, config) as svc:
        _user(svc, name)
        svc.delete_principal(ACTOR, name)
    typer.echo(f"deleted user {name}")


@user_app.command("disable")
def user_disable(name: str, data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Disable a user: logins and tokens stop working on the next request; nothing is deleted."""
    with _service(data_dir, config) as svc:
        _user(svc, name)
        svc.set_disabled(ACTOR, name, True)
    typer.echo(f"disabled user {name}")


@user_app.command("enable")
def user_enable(name: str, data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Enable a disabled user again."""
    with _service(data_dir, config) as svc:
        _user(svc, name)
        svc.set_disabled(ACTOR, name, False)
    typer.echo(f"enabled user {name}")


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


@robot_app.command("list")
def robot_list(
    as_json: Annotated[bool, JsonOption] = False, data_dir: DataDirOption = None, config: ConfigOption = None
) -> None:
    """List robot accounts: state, live tokens and what they may do."""
    with _service(data_dir, config) as svc:
        robots = svc.store.list_principals("robot")
        tokens = svc.store.list_tokens()
        grants = svc.store.list_grants()
    now = dt.datetime.now(dt.UTC)
    live: dict[str, int] = {}
    for t in tokens:
        if t.principal.kind == "robot" and _token_state(t, now) == "live":
            live[t.principal.name] = live.get(t.principal.name, 0) + 1
    held: dict[str, list[Any]] = {}
    for g in grants:
        if g.subject_kind == "principal":
            held.setdefault(g.subject, []).append(g)
    if as_json:
        print_json(
            [
                {
                    "name": r.name,
                    "disabled": r.disabled,
                    "live_tokens": live.get(r.name, 0),
                    "roles": [_grant_doc(g) for g in held.get(r.name, [])],
                }
                for r in robots
            ]
        )
        return
    print_table(
        ("NAME", "STATE", "LIVE TOKENS", "ROLES"),
        [
            (
                r.name,
                "disabled" if r.disabled else "active",
                live.get(r.name, 0),
                ", ".join(_grant_text(g) for g in held.get(r.name, [])),
            )
            for r in robots
        ],
        empty="no robot accounts yet: create one with `hallmark robot create NAME --scope repository:NS/*:pull`",
    )


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
    kind, scope = _scope_args(repo, namespace)
    with _service(data_dir, config) as svc:
        svc.grant(ACTOR, "team" if team else "principal", subject, kind, scope or "", role)
    typer.echo(f"granted {role} on {kind} {scope or ''} to {subject}".replace("  ", " "))


def _scope_args(repo: str | None, namespace: str | None) -> tuple[str, str]:
    if repo and namespace:
        raise _fail("give --repo or --namespace, not both")
    return ("repository", repo) if repo else ("namespace", namespace) if namespace else ("catalog", "")


@perm_app.command("list")
def perm_list(
    subject: Annotated[str | None, typer.Option("--subject", help="Only this user, robot or team.")] = None,
    as_json: Annotated[bool, JsonOption] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List granted roles: who holds which role on the catalog, a namespace or a repository."""
    with _service(data_dir, config) as svc:
        grants = [g for g in svc.store.list_grants() if subject is None or g.subject == subject]
    if as_json:
        print_json([_grant_doc(g) for g in grants])
        return
    print_table(
        ("SUBJECT", "KIND", "ROLE", "ON"),
        [
            (
                g.subject,
                "team" if g.subject_kind == "team" else "user/robot",
                g.role,
                "catalog" if g.scope_kind == "catalog" else f"{g.scope_kind} {g.scope}",
            )
            for g in grants
        ],
        empty="no permissions granted"
        + (f" to {subject}" if subject else "")
        + ": grant one with `hallmark permission add SUBJECT ROLE --namespace NS`",
    )


@perm_app.command("remove")
def perm_remove(
    subject: str,
    role: str,
    repo: Annotated[str | None, typer.Option("--repo")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace")] = None,
    team: Annotated[bool, typer.Option("--team", help="SUBJECT is a team.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Take back ROLE from SUBJECT (the same scope options as ``permission add``); audited like the API."""
    kind, scope = _scope_args(repo, namespace)
    with _service(data_dir, config) as svc:
        gone = svc.revoke(ACTOR, "team" if team else "principal", subject, kind, scope or "", role)
    where = "the catalog" if kind == "catalog" else f"{kind} {scope}"
    if not gone:
        raise _fail(f"{subject} holds no {role} role on {where}")
    typer.echo(f"removed {role} on {where} from {subject}")


def _token_state(t: Any, now: dt.datetime) -> str:
    def aware(x: dt.datetime) -> dt.datetime:
        return x if x.tzinfo else x.replace(tzinfo=dt.UTC)

    if t.revoked_at is not None:
        return "revoked"
    if t.expires_at is not None and aware(t.expires_at) <= now:
        return "expired"
    return "live"


def _when(x: dt.datetime | None) -> str:
    return "-" if x is None else (x if x.tzinfo else x.replace(tzinfo=dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")


@token_app.command("create")
def token_create(
    owner: Annotated[str, typer.Argument(help="The user or robot the token acts as.")],
    name: Annotated[str, typer.Option("--name", help="What the token is for (shown in listings).")] = "cli",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", help="repository:<name|ns/*>:pull,push,delete (repeatable); none: all of OWNER's rights"
        ),
    ] = None,
    expires_days: Annotated[
        float,
        typer.Option("--expires-days", min=0, max=3650, help="Lifetime in days, as in the API (0: never expires)."),
    ] = 30,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a token for OWNER and print it (shown only this once; the server keeps a hash)."""
    with _service(data_dir, config) as svc:
        tid, token = svc.create_token(ACTOR, owner, name, scope or None, expires_days or None)
    typer.echo(f"token {tid} for {owner} (shown only this once):\n{token}")


@token_app.command("list")
def token_list(
    owner: Annotated[str | None, typer.Option("--owner", help="Only this user's or robot's tokens.")] = None,
    as_json: Annotated[bool, JsonOption] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List tokens (never their secrets): id, owner, name, scopes, dates and state."""
    import orjson

    with _service(data_dir, config) as svc:
        rows = svc.store.list_tokens(owner)
    now = dt.datetime.now(dt.UTC)
    docs: list[dict[str, Any]] = [
        {
            "id": t.id,
            "owner": t.principal.name,
            "name": t.name,
            "scopes": orjson.loads(t.scopes) if t.scopes else None,
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "revoked_at": t.revoked_at,
            "state": _token_state(t, now),
        }
        for t in rows
    ]
    if as_json:
        print_json(docs)
        return
    print_table(
        ("ID", "OWNER", "NAME", "SCOPES", "CREATED", "EXPIRES", "STATE"),
        [
            (
                d["id"],
                d["owner"],
                d["name"],
                " ".join(d["scopes"]) if d["scopes"] else "all of the owner's rights",
                _when(d["created_at"]),
                _when(d["expires_at"]),
                d["state"],
            )
            for d in docs
        ],
        empty="no tokens" + (f" of {owner}" if owner else "") + ": create one with `hallmark token create OWNER`",
    )


@token_app.command("revoke")
def token_revoke(token_id: str, data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Revoke one token by its id (takes effect on the next request)."""
    with _service(data_dir, config) as svc:
        ok = svc.revoke_token(ACTOR, token_id)
    if not ok:
        raise _fail(f"token {token_id} not found or already revoked")
    typer.echo(f"revoked token {token_id}")


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
    app.add_typer(token_app, name="token")
    app.add_typer(audit_app, name="audit")
