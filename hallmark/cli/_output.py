"""What commands print for people (Rich tables) and for machines (``--json``).

Rich is imported only when a table is printed, so commands that never print one do not pay for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import typer

if TYPE_CHECKING:
    from rich.console import Console

JsonOption = typer.Option("--json", help="Print JSON for scripts instead of a table.")


def print_json(doc: Any) -> None:
    typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS).decode())


def stdout_console() -> Console:
    """A console on stdout; piped output is never wrapped (a long reference stays on one line)."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=1000, no_color=True)
    return console


def interactive_stderr() -> bool:
    """Progress bars only for a person watching: stderr is a terminal and this is not a CI job."""
    return sys.stderr.isatty() and not os.environ.get("CI") and os.environ.get("TERM") != "dumb"


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str, title: str | None = None) -> None:
    """A table with ``columns``; when there are no rows, the one line ``empty`` instead."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    rows = list(rows)
    if not rows:
        typer.echo(empty)
        return
    table = Table(*columns, box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left")
    for row in rows:
        table.add_row(*("-" if v is None or v == "" else escape(str(v)) for v in row))
    stdout_console().print(table)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def write_output(path: str, text: str) -> None:
    """Write ``text`` (plus a newline) to ``path``: through a temporary file and a rename for a
    regular file (never half-written), directly for anything else. Renaming over ``/dev/null``,
    a FIFO or ``/dev/stdout`` would replace the device (as root: break the machine)."""
    try:
        regular = not os.path.exists(path) or os.path.isfile(path)
    except OSError:
        regular = False
    if not regular or os.path.islink(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
            f.write("\n")
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.write("\n")
    os.replace(tmp, path)
