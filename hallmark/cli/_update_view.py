"""How ``hallmark db update`` looks: progress bars on a terminal, and the summary at the end."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from hallmark.cli._output import interactive_stderr, print_table

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from hallmark.pipeline.advisory_sets import UpdateProgress


class _Bars:
    """One bar for the feeds done so far, one for the file being fetched (bytes), one for loading."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.feeds = progress.add_task("feeds", total=None)
        self.current: dict[str, TaskID] = {}
        self.load: TaskID | None = None

    def fetching(self, path: str, total: int | None) -> None:
        self.current[path] = self.progress.add_task(path, total=total)

    def advance(self, path: str, nbytes: int) -> None:
        task = self.current.get(path)
        if task is not None:
            self.progress.advance(task, nbytes)

    def fetched(self, path: str, status: str) -> None:
        task = self.current.pop(path, None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.advance(self.feeds, 1)
        self.progress.update(self.feeds, description=f"feeds ({path}: {status})")

    def loading(self, files: int) -> None:
        done = self.progress.tasks[self.feeds].completed
        self.progress.update(self.feeds, total=done, description="feeds")
        self.load = self.progress.add_task(f"loading {files} advisory feeds", total=files or None)

    def loaded(self, path: str) -> None:
        if self.load is not None:
            self.progress.advance(self.load, 1)
            self.progress.update(self.load, description=f"loading advisory feeds ({path})")


class _Quiet:
    def fetching(self, path: str, total: int | None) -> None:
        pass

    def advance(self, path: str, nbytes: int) -> None:
        pass

    def fetched(self, path: str, status: str) -> None:
        pass

    def loading(self, files: int) -> None:
        pass

    def loaded(self, path: str) -> None:
        pass


@contextmanager
def update_progress() -> Iterator[UpdateProgress]:
    """Rich progress on stderr for a person at a terminal; nothing at all in CI or when redirected."""
    if not interactive_stderr():
        yield _Quiet()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield _Bars(progress)


def source_label(path: str) -> str:
    """The source a loaded file belongs to: ``osv/PyPI/all.zip`` -> ``OSV PyPI``."""
    if ".tmp/" in path:  # records of sets imported before sources were stored relative to the set
        path = path.split(".tmp/", 1)[1]
    parts = path.split("/")
    if parts[0] == "osv" and len(parts) > 1:
        return f"OSV {parts[1]}"
    if parts[0] == "debian":
        if "DSA" in parts:
            return "Debian DSA"
        if "DLA" in parts:
            return "Debian DLA"
        return "Debian tracker"
    if parts[0] == "alpine":
        return "Alpine secdb"
    return parts[0]


def per_source(stats: list[dict[str, Any]], collapse: bool = False) -> list[tuple[str, int, int]]:
    """(source, advisories loaded, records skipped) per source, in the order first seen; ``collapse``
    folds the OSV ecosystems into one ``OSV`` entry (for a one-line summary)."""
    out: dict[str, list[int]] = {}
    for s in stats:
        label = source_label(str(s.get("source", "?")))
        if collapse and label.startswith("OSV "):
            label = "OSV"
        entry = out.setdefault(label, [0, 0])
        entry[0] += int(s.get("loaded") or 0)
        entry[1] += sum((s.get("skipped") or {}).values())
    return [(label, n, skipped) for label, (n, skipped) in out.items()]


def when(stamp: str | dt.datetime | None) -> str:
    if stamp is None:
        return "-"
    t = stamp if isinstance(stamp, dt.datetime) else dt.datetime.fromisoformat(str(stamp))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def print_update_summary(record: dict[str, Any]) -> None:
    """Set id, date, advisories per source, time taken; then only what needs attention."""
    base = str(record.get("base"))
    origin = f"the mirror {base}" if "://" not in base or base.startswith("file://") else "the live feeds"
    typer.echo(
        f"advisory set {record['set']} active: {record['advisories']:,} advisories, "
        f"imported {when(record.get('imported_at'))} from {origin} in {record.get('seconds', 0):.1f} s"
    )
    rows = [(label, f"{n:,}", f"{skipped:,}" if skipped else "") for label, n, skipped in per_source(record["stats"])]
    print_table(("SOURCE", "ADVISORIES", "SKIPPED"), rows, empty="no advisories were loaded")
    files = record.get("files") or []
    counts: dict[str, int] = {}
    for f in files:
        counts[str(f.get("status"))] = counts.get(str(f.get("status")), 0) + 1
    fetched = {k: counts.pop(k) for k in ("downloaded", "copied", "not-modified") if k in counts}
    missing = [f["path"] for f in files if f.get("status") == "missing"]
    counts.pop("missing", None)
    if fetched:
        typer.echo("feeds: " + ", ".join(f"{n} {k.replace('-', ' ')}" for k, n in fetched.items()))
    eol = record.get("endoflife") or {}
    if eol.get("products"):
        change = "changed: images are re-evaluated" if eol.get("changed") else "unchanged"
        typer.echo(f"end-of-life data: {len(eol['products'])} products, {eol['cycles']} release cycles ({change})")
    if missing:
        typer.echo(f"not in the source ({len(missing)}): " + ", ".join(missing))
    for f in files:
        status = str(f.get("status"))
        if status not in ("downloaded", "copied", "not-modified", "missing"):
            typer.echo(f"  {f['path']}: {status}")
    reasons: dict[str, int] = {}
    for s in record["stats"]:
        for reason, n in (s.get("skipped") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(n)
    if reasons:
        typer.echo("skipped records: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())))
    if record.get("rules"):
        typer.echo("rule bundles installed: " + ", ".join(record["rules"]))
