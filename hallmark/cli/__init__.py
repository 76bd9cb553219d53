"""The ``hallmark`` command. Each module in this package that defines ``register(app)`` adds its commands.

A run imports only the module of the command it names (``hallmark sbom`` never pays for the
server, the database or signing): ``hallmark/cli/<command>.py``, or the module :data:`MODULE_OF`
names; anything else (``--help``, a command found in neither) loads every module, so a command
is never missing, only slower to start. ``from hallmark.cli import app`` gives the full app.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

import typer

#: Commands whose module is not named after them (a stale entry only costs start-up time).
MODULE_OF = {
    "worker": "db",
    "sign": "signing",
    "verify": "signing",
    "key": "signing",
    "user": "access",
    "robot": "access",
    "permission": "access",
    "token": "access",
    "audit": "access",
    "restore": "backup",
}

_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Hallmark: a secure container-image catalog.")


def _print_version(value: bool) -> None:
    """Eager: runs while the options are parsed, before Click asks for a command."""
    if value:
        from hallmark import __version__

        typer.echo(f"hallmark {__version__}")
        raise typer.Exit()


@_app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Hallmark: a secure container-image catalog."""


_loaded: set[str] = set()


_LIST_ITEM = re.compile(r"\s*(?:[*-]|\d+[.)])\s")


def reflow(text: str | None) -> str | None:
    """One line per paragraph. Docstrings wrap at ~110 columns and Rich keeps those breaks, so
    ``--help`` showed sentences cut mid-line at odd places; list items and indented blocks
    keep their own lines."""
    if not text:
        return text
    paragraphs = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines = para.split("\n")
        if all(line.startswith("    ") for line in lines):  # an example block
            paragraphs.append(para)
            continue
        out = [lines[0].rstrip()]
        for line in lines[1:]:
            if _LIST_ITEM.match(line):
                out.append(line.rstrip())
            else:
                out[-1] += " " + line.strip()
        paragraphs.append("\n".join(out))
    return "\n\n".join(paragraphs)


_MARKUP = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")  # what rich.markup.escape escapes (not imported: start-up)
_reflowed: set[int] = set()


def _shown(text: str | None) -> str | None:
    """Reflowed, and with ``[...]`` escaped: Rich took ``[server]`` in a help text as markup and dropped it."""
    text = reflow(text)
    return _MARKUP.sub(r"\1\1\\\2", text) if text else text


def _reflow_help(app: typer.Typer) -> None:
    """Give every command and group of ``app`` its help as shown (each once)."""
    infos: list[Any] = [*app.registered_commands, *app.registered_groups]
    for info in infos:
        if id(info) in _reflowed:
            continue
        _reflowed.add(id(info))
        text = info.help or (inspect.getdoc(info.callback) if info.callback else None)
        sub = getattr(info, "typer_instance", None)
        if not text and sub is not None and isinstance(sub.info.help, str):
            text = sub.info.help
        info.help = _shown(text)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def _register(name: str) -> None:
    if name in _loaded:
        return
    _loaded.add(name)
    register = getattr(importlib.import_module(f"{__name__}.{name}"), "register", None)
    if register is not None:
        register(_app)
        _reflow_help(_app)


def _load_commands() -> None:
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            _register(mod.name)


def registered_names() -> set[str]:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in _app.registered_commands}
    return names | {g.name or "" for g in _app.registered_groups}


def load_for(argv: list[str]) -> None:
    """Register the command ``argv`` names, importing as little as possible."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is None and "--version" in argv:
        return  # answered while the options are parsed; no command needed
    if command is not None:
        module = MODULE_OF.get(command, command)
        if module.isidentifier() and not module.startswith("_") and (Path(__file__).parent / f"{module}.py").is_file():
            _register(module)
            if command in registered_names():
                return
    _load_commands()


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # every command, for tests and tools that import the app
        _load_commands()
        return _app
    raise AttributeError(name)


def main() -> None:
    load_for(sys.argv[1:])
    try:
        _app(standalone_mode=True)
    except Exception as exc:
        # Any command that opens the database: an unreachable or misconfigured one is one line, exit 2.
        from hallmark.metadata.db import DatabaseUnavailable

        if not isinstance(exc, DatabaseUnavailable):
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
