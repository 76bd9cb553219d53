"""Alpine secdb loader (``v<rel>/<repo>.json``).

secdb lists, per package, *fixed* apk versions and the CVEs each fixed; an
installed version older than a key is affected by that key's CVEs, and key ``0``
means "never affected". Each (package, CVE) becomes an ``Alpine:v<rel>`` entry
with range ``[0, fixed)`` in apk order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from .osv import Advisory, AffectedPackage, ImportStats, compile_range
from .versions import SCHEMES

APK = SCHEMES["apk"]


def parse_secdb(
    data: bytes | dict[str, Any], source: str = "secdb"
) -> tuple[list[Advisory], list[AffectedPackage], ImportStats]:
    """Parse one secdb JSON document."""
    stats = ImportStats(source)
    doc = orjson.loads(data) if isinstance(data, bytes) else data
    release = str(doc.get("distroversion", "")).strip()
    if not release.startswith("v"):
        stats.skip("missing distroversion", source)
        return [], [], stats
    eco = f"Alpine:{release}"
    advisories: dict[str, Advisory] = {}
    affected: list[AffectedPackage] = []
    for item in doc.get("packages") or []:
        pkg = item.get("pkg") if isinstance(item, dict) else None
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            stats.skip("package without name", source)
            continue
        stats.members += 1
        name = pkg["name"]
        for fixed, ids in (pkg.get("secfixes") or {}).items():
            fixed = str(fixed)
            if fixed == "0":
                continue  # never affected
            rng = compile_range(APK, [{"introduced": "0"}, {"fixed": fixed}])
            if rng.broken:
                stats.skip("unparseable fixed version", f"{name} {fixed}")
            for raw_id in ids or []:
                vid = str(raw_id).split()[0]  # entries may carry a trailing comment
                adv = advisories.setdefault(
                    vid,
                    Advisory(id=vid, references=(f"https://security.alpinelinux.org/vuln/{vid}",), source=source),
                )
                affected.append(
                    AffectedPackage(
                        advisory=adv,
                        ecosystem=eco,
                        name=name.lower(),
                        scheme=APK,
                        ranges=(rng,),
                        purl=f"pkg:apk/alpine/{name}?distro=alpine-{release.lstrip('v')}",
                    )
                )
                stats.affected_entries += 1
        stats.loaded += 1
    return list(advisories.values()), affected, stats


def load_secdb(path: str | Path) -> tuple[list[Advisory], list[AffectedPackage], ImportStats]:
    """Load one secdb JSON file."""
    return parse_secdb(Path(path).read_bytes(), str(path))
