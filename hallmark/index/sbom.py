"""Renderings of an :class:`IndexResult`: CycloneDX 1.6 JSON, SPDX 2.3 JSON, Hallmark JSON, a Rich table.

The SBOM formats are built with their reference libraries (cyclonedx-python-lib, spdx-tools) so
schema details (bom-refs, SPDX ids, licence expressions) follow the specs, not our reading of them.
"""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL
from rich.console import Console
from rich.table import Table
from spdx_tools.common.spdx_licensing import spdx_licensing
from spdx_tools.spdx.model import (
    Actor,
    ActorType,
    CreationInfo,
    Document,
    ExternalPackageRef,
    ExternalPackageRefCategory,
    Relationship,
    RelationshipType,
    SpdxNoAssertion,
)
from spdx_tools.spdx.model import Package as SpdxPackage
from spdx_tools.spdx.model.package import PackagePurpose
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from hallmark import __version__ as hallmark_version

try:  # cyclonedx-python-lib >= 11.x moved it; older 7.x-10.x only have the old path
    from cyclonedx.contrib.license.factories import LicenseFactory
except ImportError:  # pragma: no cover
    from cyclonedx.factory.license import LicenseFactory  # type: ignore[no-redef]
from hallmark.index.indexer import IndexResult
from hallmark.model import Package

TOOL = "hallmark"
_CDX_TYPES = {
    "os": ComponentType.LIBRARY,
    "application": ComponentType.APPLICATION,
    "stdlib": ComponentType.LIBRARY,
}


def _props(pkg: Package) -> list[tuple[str, str]]:
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
    bom = Bom()
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name=TOOL, version=str(hallmark_version))
    )
    root = Component(
        type=ComponentType.CONTAINER,
        name=image_name,
        version=result.image_digest or "",
        bom_ref=f"image:{result.image_digest or image_name}",
    )
    bom.metadata.component = root
    factory = LicenseFactory()
    components = []
    if result.distro:
        d = result.distro
        os_comp = Component(
            type=ComponentType.OPERATING_SYSTEM,
            name=d.id,
            version=d.version_id or "",
            description=d.pretty_name,
            bom_ref=f"os:{d.id}",
        )
        components.append(os_comp)
    for i, pkg in enumerate(result.packages):
        comp = Component(
            type=_CDX_TYPES.get(pkg.type, ComponentType.LIBRARY),
            name=pkg.name,
            version=pkg.version,
            purl=PackageURL.from_string(pkg.purl) if pkg.purl else None,
            bom_ref=f"pkg:{i}:{pkg.purl or pkg.name}",
            licenses=[factory.make_from_string(lic) for lic in pkg.licenses],
            properties=[Property(name=k, value=v) for k, v in _props(pkg)],
        )
        components.append(comp)
    for c in components:
        bom.components.add(c)
    bom.register_dependency(root, components)
    return JsonV1Dot6(bom).output_as_string(indent=2)


def _spdx_license(licenses: list[str]) -> Any:
    """An SPDX expression when every declared licence is one, else NOASSERTION (text kept in the comment)."""
    if not licenses:
        return SpdxNoAssertion()
    expr = " AND ".join(f"({x})" if " " in x else x for x in licenses)
    try:
        return spdx_licensing.parse(expr, validate=True, strict=True)
    except Exception:  # license-expression raises several unrelated types (and has bugs) on bad input
        return SpdxNoAssertion()


def _spdx_id(text: str) -> str:
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.\-]+", "-", text).strip("-")


def build_spdx(result: IndexResult, image_name: str) -> Document:
    """The SPDX 2.3 document model (exposed so callers can validate it with spdx-tools)."""
    created = datetime.now(UTC).replace(microsecond=0)
    safe = re.sub(r"[^A-Za-z0-9.\-]+", "-", image_name).strip("-") or "image"
    info = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=image_name,
        document_namespace=f"https://spdx.org/spdxdocs/{TOOL}-{safe}-{uuid.uuid4()}",
        creators=[Actor(ActorType.TOOL, f"{TOOL}-{hallmark_version}")],
        created=created,
    )
    image_id = _spdx_id(f"Image-{safe}")
    packages = [
        SpdxPackage(
            spdx_id=image_id,
            name=image_name,
            download_location=SpdxNoAssertion(),
            version=result.image_digest,
            files_analyzed=False,
            primary_package_purpose=PackagePurpose.CONTAINER,
        )
    ]
    rels = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image_id)]
    if result.distro:
        d = result.distro
        os_id = _spdx_id(f"OperatingSystem-{d.id}")
        packages.append(
            SpdxPackage(
                spdx_id=os_id,
                name=d.id,
                download_location=SpdxNoAssertion(),
                version=d.version_id,
                files_analyzed=False,
                primary_package_purpose=PackagePurpose.OPERATING_SYSTEM,
                description=d.pretty_name,
            )
        )
        rels.append(Relationship(image_id, RelationshipType.CONTAINS, os_id))
    for i, pkg in enumerate(result.packages):
        pid = _spdx_id(f"Package-{pkg.ecosystem}-{pkg.name}-{i}")
        comment = "; ".join(f"{k}={v}" for k, v in _props(pkg))
        lic = _spdx_license(pkg.licenses)
        packages.append(
            SpdxPackage(
                spdx_id=pid,
                name=pkg.name,
                download_location=SpdxNoAssertion(),
                version=pkg.version,
                files_analyzed=False,
                license_concluded=SpdxNoAssertion(),
                license_declared=lic,
                license_comment=(
                    f"declared: {', '.join(pkg.licenses)}"
                    if pkg.licenses and isinstance(lic, SpdxNoAssertion)
                    else None
                ),
                copyright_text=SpdxNoAssertion(),
                source_info=(
                    f"built from {pkg.source_name} {pkg.source_version or ''}".strip()
                    if pkg.source_name and pkg.source_name != pkg.name
                    else None
                ),
                comment=comment,
                external_references=(
                    [ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", pkg.purl)]
                    if pkg.purl
                    else []
                ),
                primary_package_purpose=(
                    PackagePurpose.APPLICATION if pkg.type == "application" else PackagePurpose.LIBRARY
                ),
            )
        )
        rels.append(Relationship(image_id, RelationshipType.CONTAINS, pid))
    return Document(info, packages=packages, relationships=rels)


def to_spdx(result: IndexResult, image_name: str) -> str:
    """SPDX 2.3 JSON."""
    out = io.StringIO()
    write_document_to_stream(build_spdx(result, image_name), out, validate=False)
    return out.getvalue()


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
