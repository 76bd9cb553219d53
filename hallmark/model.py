"""Shared data model passed between pipeline stages (index -> match -> report).

Kept dependency-free so every stage (and its tests) can use it without pulling
in the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Distro:
    """The image's operating system, from /etc/os-release and fallbacks."""

    id: str  # "debian", "ubuntu", "alpine", "rhel", ...
    version_id: str | None = None  # "12", "3.19", ...
    codename: str | None = None  # "bookworm"
    pretty_name: str | None = None


@dataclass
class Package:
    """One installed package, as advisories need it."""

    name: str
    version: str
    ecosystem: str  # OSV ecosystem name: "Debian", "Alpine", "PyPI", "npm", "Go", "Maven", ...
    purl: str | None = None
    source_name: str | None = None  # Debian source package (advisories use it)
    source_version: str | None = None
    licenses: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    layer: str | None = None  # digest of the layer that introduced it
    type: str = "library"  # "os", "library", "application", "binary", "stdlib"
    extra: dict[str, Any] = field(default_factory=dict)
