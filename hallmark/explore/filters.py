"""The explore filters, parsed and validated once for the API (query string) and the CLI (options).

Every filter is optional and they compose with AND. The finding filters (severity, kev,
fix_available, cve, package) apply to one and the same finding: ``severity=critical&kev=true``
means a critical finding that is in KEV, not a critical one and some other KEV-listed one.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from hallmark.pipeline.finding_rows import SEVERITY_RANK

GRADES = ("A", "B", "C", "D", "E", "F", "unknown")
VIEWS = ("workloads", "images")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_ADVISORY = re.compile(r"^[A-Za-z][A-Za-z0-9._:+-]{1,127}$")
_PACKAGE = re.compile(r"^[^\s@<>=!,]{1,255}$")
_CONSTRAINT = re.compile(r"^(<=|>=|==|!=|<|>|=)?\s*([A-Za-z0-9][^\s<>=!,]{0,254})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,252}$")  # cluster, namespace
KNOWN = frozenset(
    {
        "exposed",
        "severity",
        "kev",
        "fix_available",
        "cve",
        "package",
        "grade",
        "cluster",
        "namespace",
        "owner",
        "source_repo",
        "include_suppressed",
        "view",
        "running",
        "limit",
        "cursor",
    }
)


class ExploreError(ValueError):
    """Bad filter input: ``field`` names the parameter, the message says what is accepted."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class PackageSpec:
    """``NAME[@RANGE]``: constraints are (operator, version) pairs, all of which must hold."""

    name: str
    constraints: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return self.name + ("@" + ",".join(op + v for op, v in self.constraints) if self.constraints else "")


@dataclass(frozen=True)
class Filters:
    exposed: bool | None = None
    severity: str | None = None  # at or above
    kev: bool | None = None
    fix_available: bool | None = None
    cve: str | None = None
    package: PackageSpec | None = None
    grades: tuple[str, ...] = ()
    cluster: str | None = None
    namespace: str | None = None
    owner: str | None = None
    source_repo: str | None = None
    include_suppressed: bool = False
    view: str = "workloads"
    running: bool | None = None  # images view: running in a (matching) workload, or not
    limit: int = DEFAULT_LIMIT
    cursor: tuple[str, ...] | None = field(default=None, compare=False)

    @property
    def min_rank(self) -> int | None:
        return SEVERITY_RANK[self.severity] if self.severity else None

    @property
    def on_findings(self) -> bool:
        """Whether any filter constrains the findings (otherwise every unsuppressed one is listed)."""
        return any(v is not None for v in (self.severity, self.kev, self.fix_available, self.cve, self.package))

    @property
    def on_workloads(self) -> bool:
        return any(v is not None for v in (self.exposed, self.cluster, self.namespace))

    def echo(self) -> dict[str, Any]:
        """The filters as applied (for the response, so a reader sees what was asked)."""
        out: dict[str, Any] = {
            "exposed": self.exposed,
            "severity": self.severity,
            "kev": self.kev,
            "fix_available": self.fix_available,
            "cve": self.cve,
            "package": self.package.describe() if self.package else None,
            "grade": list(self.grades) or None,
            "cluster": self.cluster,
            "namespace": self.namespace,
            "owner": self.owner,
            "source_repo": self.source_repo,
            "include_suppressed": self.include_suppressed,
            "view": self.view,
            "running": self.running,
            "limit": self.limit,
        }
        return {k: v for k, v in out.items() if v is not None}


def parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ExploreError(name, f"expected true or false, got {value!r}")


def parse_package(value: str) -> PackageSpec:
    """``NAME`` or ``NAME@RANGE`` where RANGE is ``<3.0.7``, ``>=1.2,<2`` or a bare version (equal)."""
    name, sep, rng = value.strip().partition("@")
    if not _PACKAGE.match(name):
        raise ExploreError("package", f"expected NAME[@RANGE] such as openssl@<3.0.7, got {value!r}")
    if not sep:
        return PackageSpec(name)
    constraints = []
    for part in rng.split(","):
        m = _CONSTRAINT.match(part.strip())
        if not m:
            raise ExploreError(
                "package", f"bad version constraint {part.strip()!r}: use <, <=, >, >=, == or != VERSION"
            )
        op = m.group(1) or "=="
        constraints.append(("==" if op == "=" else op, m.group(2)))
    return PackageSpec(name, tuple(constraints))


def parse_grades(value: str) -> tuple[str, ...]:
    out = []
    for part in value.split(","):
        g = part.strip()
        g = g if g == "unknown" else g.upper()
        if g not in GRADES:
            raise ExploreError("grade", f"unknown grade {part.strip()!r}: use A, B, C, D, E, F or unknown")
        if g not in out:
            out.append(g)
    return tuple(out)


def encode_cursor(key: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([str(k) for k in key])).decode().rstrip("=")


def decode_cursor(value: str, size: int) -> tuple[str, ...]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ExploreError("cursor", "not a cursor this server gave out") from exc
    if not isinstance(key, list) or len(key) != size or not all(isinstance(k, str) for k in key):
        raise ExploreError("cursor", "not a cursor of this view")
    return tuple(key)


def _text(name: str, value: str, pattern: re.Pattern[str] | None = None, limit: int = 512) -> str:
    v = value.strip()
    if not v or len(v) > limit or (pattern is not None and not pattern.match(v)):
        raise ExploreError(name, f"invalid value {value!r}")
    return v


def parse_filters(params: Mapping[str, str], strict: bool = True) -> Filters:
    """Filters from string parameters (the API's query string, the CLI's options).

    ``strict`` refuses parameters this version does not know, so a misspelt filter is an
    error instead of silently returning everything.
    """
    if strict:
        unknown = sorted(set(params) - KNOWN)
        if unknown:
            raise ExploreError(unknown[0], f"unknown parameter; known: {', '.join(sorted(KNOWN))}")
    p = {k: v for k, v in params.items() if v is not None and str(v).strip() != ""}
    values: dict[str, Any] = {}
    for name in ("exposed", "kev", "fix_available", "include_suppressed", "running"):
        if name in p:
            values[name] = parse_bool(name, p[name])
    if "severity" in p:
        sev = p["severity"].strip().lower()
        if sev not in SEVERITY_RANK or sev == "unknown":
            raise ExploreError("severity", f"expected critical, high, medium or low, got {p['severity']!r}")
        values["severity"] = sev
    if "cve" in p:
        cve = _text("cve", p["cve"], _ADVISORY, 128)
        values["cve"] = cve.upper() if cve[:4].upper() == "CVE-" else cve  # CVE ids are upper case
    if "package" in p:
        values["package"] = parse_package(p["package"])
    if "grade" in p:
        values["grades"] = parse_grades(p["grade"])
    for name in ("cluster", "namespace"):
        if name in p:
            values[name] = _text(name, p[name], _NAME, 253)
    if "owner" in p:
        values["owner"] = _text("owner", p["owner"], None, 128)
    if "source_repo" in p:
        values["source_repo"] = _text("source_repo", p["source_repo"], re.compile(r"^\S+$"), 512)
    if "view" in p:
        view = p["view"].strip().lower()
        if view not in VIEWS:
            raise ExploreError("view", f"expected workloads or images, got {p['view']!r}")
        values["view"] = view
    if "running" in values and values.get("view", "workloads") != "images":
        raise ExploreError("running", "only with view=images (the workloads view lists running images only)")
    if "limit" in p:
        try:
            limit = int(p["limit"])
        except ValueError as exc:
            raise ExploreError("limit", f"expected a number from 1 to {MAX_LIMIT}") from exc
        if not 1 <= limit <= MAX_LIMIT:
            raise ExploreError("limit", f"expected a number from 1 to {MAX_LIMIT}")
        values["limit"] = limit
    f = Filters(**values)
    if "cursor" in p:
        f = Filters(**values, cursor=decode_cursor(p["cursor"], 6 if f.view == "workloads" else 2))
    return f
