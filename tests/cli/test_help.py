"""Every command's ``--help`` renders (no Rich markup crash), and ``--version`` prints the version."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from hallmark import __version__
from hallmark.cli import app


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the ``hallmark`` tree, as argv prefixes (the root is ``()``)."""
    paths: list[tuple[str, ...]] = []

    def walk(cmd: Any, prefix: tuple[str, ...]) -> None:  # Typer vendors its own Click: duck-typed
        paths.append(prefix)
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return paths


PATHS = _command_paths()


def test_tree_is_walked() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"", "sbom", "scan", "serve", "db", "db update", "catalog promote", "key generate"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "hallmark")
def test_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "Usage" in result.output


def test_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "hallmark", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"hallmark {__version__}"
    assert proc.stderr == ""


def test_listed_help_is_one_line_per_command_and_keeps_brackets() -> None:
    """Docstrings wrap at ~110 columns; the command list showed those breaks mid-sentence, and Rich
    dropped ``[server]`` from serve's help as if it were markup."""
    proc = subprocess.run(
        [sys.executable, "-m", "hallmark", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│ ")]
    listed = {row.split()[1]: row for row in rows if not row.startswith("│ --") and len(row.split()) > 2}
    assert {"backup", "gc", "serve", "scan"} <= set(listed)
    continuation = [row for row in rows if row.startswith("│" + " " * 8)]
    assert continuation == [], continuation  # each command's summary fits its own row
    assert "when [server] tls_cert" in listed["serve"]


def test_reflow() -> None:
    from hallmark.cli import reflow

    text = """First line
        goes on here.

        * one item
          continued
        * two

            hallmark scan img
            hallmark sbom img
        """
    assert reflow(text) == (
        "First line goes on here.\n\n* one item continued\n* two\n\n    hallmark scan img\n    hallmark sbom img"
    )
    assert reflow(reflow(text)) == reflow(text)
