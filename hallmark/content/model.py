"""Result types of the content checks (malware, secrets, image configuration).

Plain frozen dataclasses with ``to_dict`` so the report writers (Hallmark JSON, SARIF,
CycloneDX) can consume them without importing the scanning engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "high", "medium", "low", "info"]
Kind = Literal["malware", "secret", "config"]
# Where a file-borne finding stands in the final filesystem (set by ``correlate_layers``):
# "present" = visible in the final image; "removed" = whited out by a later layer but still
# downloadable in the layer blob; "replaced" = a later layer wrote another file at that path.
Status = Literal["present", "removed", "replaced"]

SEVERITY_ORDER: dict[str, int] = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0}


@dataclass(frozen=True, slots=True)
class Finding:
    """One content finding. Secret findings never carry the secret, only a redacted preview
    and ``fingerprint`` (SHA-256 of the secret) so a leak can be tracked across images."""

    kind: Kind
    rule_id: str
    severity: Severity
    title: str
    engine: str  # "gitleaks", "yara", "sha256-blocklist", "clamav", "hallmark"
    path: str | None = None  # file path in the layer; "a.jar!/b/c" for archive members
    layer_index: int | None = None
    layer_digest: str | None = None
    location: str | None = None  # non-file places: "config.Env[2]", "history[4].created_by", ...
    line: int | None = None
    preview: str | None = None
    fingerprint: str | None = None
    description: str | None = None
    remediation: str | None = None
    cis_id: str | None = None
    status: Status | None = None
    removed_in_layer: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def outer_path(self) -> str | None:
        """The layer path that holds this finding (archive members map to their archive)."""
        return None if self.path is None else self.path.split("!/", 1)[0]

    @property
    def message(self) -> str:
        """One human line, including the "removed in layer N, still present in layer M" note."""
        where = self.path or self.location or "image"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{self.title} ({self.rule_id}) at {where}"
        if self.layer_index is not None:
            text += f" in layer {self.layer_index}"
        if self.status == "removed" and self.removed_in_layer is not None:
            text += f"; removed in layer {self.removed_in_layer}, still present in layer {self.layer_index}"
        elif self.status == "replaced" and self.removed_in_layer is not None:
            text += f"; overwritten in layer {self.removed_in_layer}, still present in layer {self.layer_index}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without ``None`` values (orjson/json both accept it)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None or value == {}:
                continue
            out[name] = dict(value) if isinstance(value, dict) else value
        out["message"] = self.message
        return out


@dataclass(frozen=True, slots=True)
class Skip:
    """A file (or part of the work on it) that was not scanned, and why.

    ``scanner`` says which check gave up ("secret", "malware", "archive", "clamav", "all");
    ``reason`` is a stable code ("too-large", "binary", "read-error", "zip-bomb", ...) and
    ``detail`` a human explanation. ``scanned=True`` marks a degraded but completed scan
    (e.g. invalid UTF-8 decoded with replacement characters).
    """

    path: str
    layer_index: int | None
    scanner: str
    reason: str
    detail: str = ""
    scanned: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "layer_index": self.layer_index,
            "scanner": self.scanner,
            "reason": self.reason,
            "detail": self.detail,
            "scanned": self.scanned,
        }


@dataclass(slots=True)
class ScanOutcome:
    """What one ``scan_file``/``scan_config`` call produced."""

    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def extend(self, other: ScanOutcome) -> None:
        self.findings.extend(other.findings)
        self.skipped.extend(other.skipped)
