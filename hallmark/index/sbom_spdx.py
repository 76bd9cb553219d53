"""SPDX 2.3 JSON, built with spdx-tools (imported only when this format is asked for)."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime
from typing import Any

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
from hallmark.index.indexer import IndexResult
from hallmark.index.sbom import TOOL, package_properties


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
        comment = "; ".join(f"{k}={v}" for k, v in package_properties(pkg))
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
