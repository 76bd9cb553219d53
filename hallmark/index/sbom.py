"""Renderings of an :class:`IndexResult`: CycloneDX 1.6 JSON, SPDX 2.3 JSON, Hallmark JSON, a Rich table.

The SBOM formats are built with their reference libraries (cyclonedx-python-lib in
:mod:`hallmark.index.sbom_cdx`, spdx-tools in :mod:`hallmark.index.sbom_spdx`) so schema
details follow the specs, not our reading of them. Those libraries take ~0.5 s to import,
so they are loaded only when their format is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.table import Table

from hallmark.index.indexer import IndexResult
from hallmark.model import Package

if TYPE_CHECKING:
    from spdx_tools.spdx.model import Document

TOOL = "hallmark"


def package_properties(pkg: Package) -> list[tuple[str, str]]:
    """Hallmark facts both SBOM formats carry as name/value properties."""
    out = [("hallmark:ecosystem", pkg.ecosystem)]
    if pkg.layer:
        out.append(("hallmark:layer", pkg.layer))
    out += [("hallmark:path", p) for p in pkg.paths]
    if pkg.source_name:
        out.append(("hallmark:source-name", pkg.source_name))
    if pkg.source_version:
        out.append(("hallmark:source-version", pkg.source_version))
    return out


def to_cyclonedx(result: IndexResult, image_name: str) -> str:
    """CycloneDX 1.6 JSON: the image is ``metadata.component`` (a container); packages its dependencies."""
    from hallmark.index import sbom_cdx

    return sbom_cdx.to_cyclonedx(result, image_name)


def build_spdx(result: IndexResult, image_name: str) -> Document:
    """The SPDX 2.3 document model (exposed so callers can validate it with spdx-tools)."""
    from hallmark.index import sbom_spdx

    return sbom_spdx.build_spdx(result, image_name)


def to_spdx(result: IndexResult, image_name: str) -> str:
    """SPDX 2.3 JSON."""
    from hallmark.index import sbom_spdx

    return sbom_spdx.to_spdx(result, image_name)


def to_hallmark_json(result: IndexResult, image_name: str) -> str:
    """Hallmark's own JSON: the :class:`IndexResult` plus the image name."""
    doc: dict[str, Any] = {"schema": "hallmark-index/1", "image": image_name, **result.to_json()}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


def render_table(result: IndexResult, image_name: str, console: Console) -> None:
    """A human summary: one row per package."""
    title = image_name
    if result.distro:
        title += f" ({result.distro.pretty_name or result.distro.id})"
    if result.status != "done":
        console.print(f"[red]{result.failure}[/red]")
        return
    table = Table(title=title)
    for col in ("Name", "Version", "Ecosystem", "Source", "Layer", "Path"):
        table.add_column(col, overflow="fold")
    for p in result.packages:
        src = f"{p.source_name} {p.source_version}" if p.source_name and p.source_name != p.name else ""
        table.add_row(p.name, p.version, p.ecosystem, src, (p.layer or "")[7:19], ", ".join(p.paths[:2]))
    console.print(table)
    console.print(f"{len(result.packages)} packages")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def render(result: IndexResult, image_name: str, fmt: str) -> str:
    """``fmt`` is cyclonedx, spdx or json."""
    if fmt == "cyclonedx":
        return to_cyclonedx(result, image_name)
    if fmt == "spdx":
        return to_spdx(result, image_name)
    if fmt == "json":
        return to_hallmark_json(result, image_name)
    raise ValueError(f"unknown format {fmt!r}")
