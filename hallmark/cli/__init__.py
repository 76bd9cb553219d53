"""The ``hallmark`` command. Each module in this package that defines ``register(app)`` adds its commands."""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Hallmark: a secure container-image catalog.")


def _print_version(value: bool) -> None:
    """Eager: runs while the options are parsed, before Click asks for a command."""
    if value:
        from hallmark import __version__

        typer.echo(f"hallmark {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Hallmark: a secure container-image catalog."""


def _load_commands() -> None:
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_load_commands()


def main() -> None:
    app()
