"""Registry options shared by ``hallmark scan`` and ``hallmark sbom``: credentials and opening REF.

Credentials come, first match wins, from ``--creds USER[:PASS]`` (a missing password is
prompted for on a terminal), ``-u USER`` with ``--password-stdin`` (or a prompt), then the
credential files ``podman``/``skopeo``/``docker login`` write (see :mod:`hallmark.oci.auth`).
A password is never echoed, printed or logged.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from hallmark.oci import ImageSource

REF_HELP = (
    "Image: host/repo:tag|@digest, oci:DIR[:tag], oci-archive:FILE, docker-archive:FILE, "
    "or a path to a docker save tar or an OCI layout (folder or tar)."
)
CredsOption = Annotated[
    str | None,
    typer.Option(
        "--creds", help="Registry USER[:PASS]; without PASS it is asked for on a terminal.", show_default=False
    ),
]
UsernameOption = Annotated[
    str | None, typer.Option("--username", "-u", help="Registry user (password from --password-stdin or a prompt).")
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the registry password from stdin (with -u).")
]
InsecureOption = Annotated[bool, typer.Option("--insecure", help="Plain HTTP to the registry (no TLS).")]


class UsageError(Exception):
    """Options that contradict each other or need a terminal that is not there."""


def _ask(user: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"no password for registry user {user!r}: give --creds USER:PASS or -u USER --password-stdin")
    return str(typer.prompt(f"Password for {user}", hide_input=True))


def credentials(creds: str | None, username: str | None, password_stdin: bool) -> tuple[str, str] | None:
    """The (user, password) the options give, or None to fall back to the credential files."""
    if creds is not None and (username is not None or password_stdin):
        raise UsageError("--creds and -u/--password-stdin are two ways to say the same; give one")
    if creds is not None:
        user, sep, password = creds.partition(":")
        if not user:
            raise UsageError("--creds: empty user name (expected USER[:PASS])")
        return user, password if sep else _ask(user)
    if password_stdin and not username:
        raise UsageError("--password-stdin needs -u/--username")
    if username is None:
        return None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: stdin gave an empty password")
        return username, password
    return username, _ask(username)


def open_image(
    ref: str,
    *,
    insecure: bool,
    platform: str | None,
    creds: str | None = None,
    username: str | None = None,
    password_stdin: bool = False,
) -> ImageSource:
    """Open REF with the credentials the options (or the user's credential files) give; errors as ``OciError``."""
    from hallmark.oci import OciError, open_source  # imported when used: `--help` stays fast

    try:
        given = credentials(creds, username, password_stdin)
    except UsageError as exc:
        raise OciError(str(exc)) from exc
    return open_source(ref, insecure=insecure, platform=platform, credentials=given, auth_files=True)
