"""CycloneDX 1.6 JSON, built with cyclonedx-python-lib (imported only when this format is asked for)."""

from __future__ import annotations

from collections.abc import Iterable

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependable, Dependency
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from hallmark import __version__ as hallmark_version
from hallmark.index.indexer import IndexResult
from hallmark.index.sbom import TOOL, package_properties

try:  # cyclonedx-python-lib >= 11.x moved it; older 7.x-10.x only have the old path
    from cyclonedx.contrib.license.factories import LicenseFactory
except ImportError:  # pragma: no cover
    from cyclonedx.factory.license import LicenseFactory

_CDX_TYPES = {
    "os": ComponentType.LIBRARY,
    "application": ComponentType.APPLICATION,
    "stdlib": ComponentType.LIBRARY,
}


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
            properties=[Property(name=k, value=v) for k, v in package_properties(pkg)],
        )
        components.append(comp)
    bom.components = components  # one sort instead of one insertion each
    _register_dependencies(bom, root, components)
    return JsonV1Dot6(bom).output_as_string(indent=2)


def _register_dependencies(bom: Bom, root: Component, components: list[Component]) -> None:
    """The root depends on every component, built in one go.

    ``Bom.register_dependency`` scans every known dependency for each one it adds, and the
    output step calls it again for every component: quadratic, ~30 s for 10,000 packages and
    an hour for 100,000. The same graph is built here at once, and the BOM's own method is
    replaced on this instance by one that looks refs up in a dict.
    """
    top = Dependency(ref=root.bom_ref, dependencies=[Dependency(ref=c.bom_ref) for c in components])
    by_ref: dict[object, Dependency] = {root.bom_ref: top}
    by_ref.update((c.bom_ref, Dependency(ref=c.bom_ref)) for c in components)
    bom.dependencies = by_ref.values()

    def register(target: Dependable, depends_on: Iterable[Dependable] | None = None) -> None:
        dep = by_ref.get(target.bom_ref)
        if dep is None:
            dep = by_ref[target.bom_ref] = Dependency(ref=target.bom_ref)
            bom.dependencies.add(dep)
        for d in depends_on or ():
            dep.dependencies.add(Dependency(ref=d.bom_ref))
            register(d)

    bom.register_dependency = register  # type: ignore[method-assign]
