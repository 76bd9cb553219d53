"""Read-only access to an OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/``).

Kept inside ``hallmark.signing`` (``hallmark/oci`` belongs to another component) and small enough to
write by hand: a layout is content-addressed files plus one JSON index. Every blob read is checked
against its digest, so a corrupted layout cannot pass as valid content. Descriptors here keep
``artifactType`` and annotations, which signature discovery needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hallmark.digest import ALGORITHMS, InvalidDigest, parse_digest

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


class LayoutError(ValueError):
    """The directory is not a readable OCI layout, or a requested item is missing or corrupt."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (the fields signing relies on)."""

    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_json(cls, obj: Any) -> Descriptor:
        if not isinstance(obj, dict):
            raise LayoutError("descriptor is not a JSON object")
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise LayoutError("descriptor lacks mediaType or digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise LayoutError(f"descriptor {digest} has an invalid size")
        try:
            parse_digest(digest)
        except InvalidDigest as exc:
            raise LayoutError(str(exc)) from exc
        annotations = obj.get("annotations") or {}
        artifact_type = obj.get("artifactType")
        return cls(
            media_type,
            digest,
            size,
            artifact_type if isinstance(artifact_type, str) else None,
            {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


class OCILayout:
    """A read-only view of an OCI layout; blobs are verified against their digest when read."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        marker = self.root / "oci-layout"
        if not marker.is_file():
            raise LayoutError(f"{self.root} is not an OCI layout (no oci-layout file)")
        try:
            version = json.loads(marker.read_bytes()).get("imageLayoutVersion")
        except (ValueError, AttributeError) as exc:
            raise LayoutError(f"{marker} is not valid JSON") from exc
        if not isinstance(version, str) or not version.startswith("1."):
            raise LayoutError(f"unsupported imageLayoutVersion {version!r}")

    def index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise LayoutError(f"cannot read {self.root / 'index.json'}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise LayoutError("index.json is not an OCI image index")
        return data

    def manifests(self) -> list[Descriptor]:
        """The descriptors listed in ``index.json`` (top level only)."""
        return [Descriptor.from_json(m) for m in self.index().get("manifests", [])]

    def resolve(self, reference: str) -> Descriptor:
        """Resolve a tag (``org.opencontainers.image.ref.name``) or a digest to a descriptor."""
        entries = self.manifests()
        if ":" in reference and reference.split(":", 1)[0] in ALGORITHMS:
            for desc in entries:
                if desc.digest == reference:
                    return desc
            data = self.blob(reference)
            return Descriptor(_media_type_of(data) or MANIFEST_MEDIA_TYPE, reference, len(data))
        matches = [d for d in entries if d.annotations.get(REF_NAME_ANNOTATION) == reference]
        if not matches:
            raise LayoutError(f"reference {reference!r} not found in {self.root}")
        return matches[-1]

    def blob_path(self, digest: str) -> Path:
        try:
            algo, hexpart = parse_digest(digest)
        except InvalidDigest as exc:
            raise LayoutError(str(exc)) from exc
        return self.root / "blobs" / algo / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob(self, digest: str) -> bytes:
        """Read a blob and check that it hashes to ``digest``."""
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LayoutError(f"blob {digest} not found in {self.root}") from exc
        algo, hexpart = parse_digest(digest)
        if ALGORITHMS[algo](data).hexdigest() != hexpart:
            raise LayoutError(f"blob {digest} is corrupt (content does not match its digest)")
        return data

    def all_manifest_descriptors(self) -> list[Descriptor]:
        """Every manifest reachable from ``index.json``, descending into nested indexes."""
        seen: dict[str, Descriptor] = {}
        queue = list(self.manifests())
        while queue:
            desc = queue.pop(0)
            if desc.digest in seen:
                continue
            seen[desc.digest] = desc
            if desc.media_type == INDEX_MEDIA_TYPE and self.has_blob(desc.digest):
                try:
                    nested = json.loads(self.blob(desc.digest))
                    queue.extend(Descriptor.from_json(m) for m in nested.get("manifests", []))
                except (ValueError, AttributeError):
                    continue
        return list(seen.values())


def _media_type_of(data: bytes) -> str | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    media_type = obj.get("mediaType") if isinstance(obj, dict) else None
    return media_type if isinstance(media_type, str) else None
