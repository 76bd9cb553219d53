"""Manifest validation: what a pushed manifest is, and which content it references."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from hallmark.digest import is_digest
from hallmark.registry.errors import RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES


@dataclass
class ParsedManifest:
    media_type: str
    artifact_type: str | None
    subject: str | None
    blob_refs: list[str] = field(default_factory=list)
    manifest_refs: list[str] = field(default_factory=list)
    annotations: dict[str, str] | None = None
    doc: dict[str, Any] = field(default_factory=dict)


def _invalid(detail: str) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", detail=detail)


def _descriptor(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _invalid(f"{where}: descriptor must be an object")
    mt, dg, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(mt, str) or not mt:
        raise _invalid(f"{where}: mediaType missing")
    if not isinstance(dg, str) or not is_digest(dg):
        raise _invalid(f"{where}: invalid digest {dg!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}: size must be a non-negative integer")
    return obj


def parse_manifest(content: bytes, content_type: str | None) -> ParsedManifest:
    """Validate a manifest body and list what it references (raises MANIFEST_INVALID)."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _invalid("manifest must be a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    ctype = (content_type or "").split(";")[0].strip() or None
    media_type = ctype or declared
    if declared is not None and ctype is not None and declared != ctype:
        raise _invalid(f"mediaType {declared!r} does not match Content-Type {ctype!r}")
    if media_type is None:
        # OCI allows mediaType to be omitted; guess from the shape.
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise RegistryError("MANIFEST_INVALID", detail=f"unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    annotations = doc.get("annotations")
    if annotations is not None and (
        not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values())
    ):
        raise _invalid("annotations must map strings to strings")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    subject = None
    if doc.get("subject") is not None:
        subject = _descriptor(doc["subject"], "subject")["digest"]
    parsed = ParsedManifest(media_type, artifact_type, subject, annotations=annotations, doc=doc)
    if media_type in IMAGE_TYPES:
        config = _descriptor(doc.get("config"), "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise _invalid("layers must be a list")
        parsed.blob_refs.append(config["digest"])
        for i, layer in enumerate(layers):
            d = _descriptor(layer, f"layers[{i}]")
            # Non-distributable (foreign) layers live elsewhere and are not pushed here.
            if d.get("urls"):
                continue
            parsed.blob_refs.append(d["digest"])
        if artifact_type is None and media_type == OCI_MANIFEST:
            parsed.artifact_type = config["mediaType"]
    else:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise _invalid("manifests must be a list")
        for i, child in enumerate(children):
            d = _descriptor(child, f"manifests[{i}]")
            platform = d.get("platform")
            if platform is not None and (
                not isinstance(platform, dict)
                or not all(isinstance(platform.get(k, ""), str) for k in ("os", "architecture", "variant"))
            ):
                raise _invalid(f"manifests[{i}]: platform must be an object with string os and architecture")
            parsed.manifest_refs.append(d["digest"])
    return parsed


def accepts(accept: Sequence[str], media_type: str) -> bool:
    """Whether an Accept list (already split into media types) admits ``media_type``."""
    return any(a in (media_type, "*/*", "application/*") for a in accept)


def default_platform_child(content: bytes, accept: Sequence[str]) -> str | None:
    """The linux/amd64 image of an index, for a client that cannot read indexes; None if there is none.

    It reads stored content, which may predate today's validation, so any shape yields None.
    """
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    children = doc.get("manifests") if isinstance(doc, dict) else None
    for child in children if isinstance(children, list) else ():
        if not isinstance(child, dict):
            continue
        plat = child.get("platform")
        media_type, digest = child.get("mediaType"), child.get("digest")
        if (
            isinstance(plat, dict)
            and plat.get("os") == "linux"
            and plat.get("architecture") == "amd64"
            and isinstance(media_type, str)
            and media_type in IMAGE_TYPES
            and isinstance(digest, str)
            and is_digest(digest)
            and accepts(accept, media_type)
        ):
            return digest
    return None
