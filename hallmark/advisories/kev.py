"""CISA Known Exploited Vulnerabilities catalog loader (joined on CVE IDs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class KevEntry:
    """The KEV fields a finding shows."""

    cve: str
    date_added: str
    due_date: str
    ransomware: str
    name: str


@dataclass
class KevCatalog:
    """KEV entries by CVE ID, with the catalog version for the import record."""

    version: str
    entries: dict[str, KevEntry]

    def __contains__(self, cve: object) -> bool:
        return cve in self.entries


def parse_kev(data: bytes | dict[str, Any]) -> KevCatalog:
    """Parse ``known_exploited_vulnerabilities.json``; entries without a CVE ID are dropped."""
    doc = orjson.loads(data) if isinstance(data, bytes) else data
    entries: dict[str, KevEntry] = {}
    for v in doc.get("vulnerabilities") or []:
        cve = v.get("cveID") if isinstance(v, dict) else None
        if not isinstance(cve, str):
            continue
        entries[cve] = KevEntry(
            cve=cve,
            date_added=str(v.get("dateAdded", "")),
            due_date=str(v.get("dueDate", "")),
            ransomware=str(v.get("knownRansomwareCampaignUse", "")),
            name=str(v.get("vulnerabilityName", "")),
        )
    return KevCatalog(str(doc.get("catalogVersion", "")), entries)


def load_kev(path: str | Path) -> KevCatalog:
    """Load the KEV JSON file."""
    return parse_kev(Path(path).read_bytes())
