"""The one protocol every image source implements, plus platform selection and reference parsing.

A source hands out the (single-platform) image manifest, its config blob and a stream per
blob; everything else (decompression, tar walking, detection) lives in :mod:`hallmark.index`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, runtime_checkable

from hallmark.digest import digest_bytes, is_digest
from hallmark.oci import mediatypes as mt


class OciError(Exception):
    """The image cannot be read: bad reference, missing blob, unreachable registry..."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (the subset Hallmark uses)."""

    media_type: str
    digest: str
    size: int = -1
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    platform: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @classmethod
    def from_json(cls, d: Any) -> Descriptor:
        """A descriptor from untrusted JSON; any malformed field is an :class:`OciError`."""
        if not isinstance(d, dict):
            raise OciError("descriptor is not a JSON object")
        digest = d.get("digest")
        if not isinstance(digest, str) or not is_digest(digest):
            raise OciError(f"descriptor has an invalid digest: {digest!r}")
        size = d.get("size", -1)
        if not isinstance(size, int) or isinstance(size, bool):
            raise OciError(f"descriptor {digest} has a non-integer size: {size!r}")
        annotations = d.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise OciError(f"descriptor {digest} has malformed annotations")
        platform = d.get("platform")
        if platform is not None and not isinstance(platform, dict):
            raise OciError(f"descriptor {digest} has a malformed platform: {platform!r}")
        media_type = d.get("mediaType", "")
        return cls(
            media_type=media_type if isinstance(media_type, str) else str(media_type),
            digest=digest,
            size=size,
            annotations=dict(annotations),
            platform=platform,
        )


@dataclass(frozen=True)
class Platform:
    """``os/arch[/variant]``; matching ignores the variant when the wanted one has none."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> Platform:
        if not text:
            return cls()
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise OciError(f"invalid platform {text!r} (expected os/arch[/variant])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, p: dict[str, Any] | None) -> bool:
        if not p:
            return False
        if p.get("os") != self.os or p.get("architecture") != self.architecture:
            return False
        return self.variant is None or p.get("variant") in (self.variant, None)

    def __str__(self) -> str:
        return "/".join(x for x in (self.os, self.architecture, self.variant) if x)


@dataclass
class ImageManifest:
    """A parsed single-platform image manifest."""

    raw: bytes
    digest: str
    media_type: str
    config: Descriptor
    layers: list[Descriptor]

    @classmethod
    def parse(cls, raw: bytes, digest: str | None = None) -> ImageManifest:
        doc = _json_object(raw, "manifest")
        media_type = mt.guess_media_type(doc)
        if media_type in mt.INDEX_TYPES:
            raise OciError("expected an image manifest, got an index")
        if "config" not in doc:
            raise OciError("malformed image manifest: no config")
        layers = doc.get("layers") or []
        if not isinstance(layers, list):
            raise OciError("malformed image manifest: layers is not a list")
        config = Descriptor.from_json(doc["config"])
        return cls(raw, digest or digest_bytes(raw), media_type, config, [Descriptor.from_json(x) for x in layers])


@runtime_checkable
class ImageSource(Protocol):
    """Where an image's bytes come from. Implementations: layout, docker-archive, registry."""

    @property
    def name(self) -> str:
        """Human-readable reference, for messages and SBOM metadata."""
        ...

    def get_manifest(self) -> ImageManifest:
        """The image manifest for the selected platform (indexes already resolved)."""
        ...

    def get_config(self, manifest: ImageManifest) -> bytes:
        """The config blob named by ``manifest``."""
        ...

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """A readable stream of the blob's (still compressed) bytes; caller closes it."""
        ...

    def close(self) -> None: ...


def select_from_index(raw: bytes, platform: Platform) -> Descriptor:
    """Pick the manifest for ``platform`` from an index; a single-entry index is taken as is."""
    children = _json_object(raw, "image index").get("manifests") or []
    if not isinstance(children, list):
        raise OciError("malformed image index: manifests is not a list")
    entries = [Descriptor.from_json(x) for x in children]
    images = [e for e in entries if e.media_type in mt.MANIFEST_TYPES or e.media_type in mt.INDEX_TYPES]
    for e in images:
        if platform.matches(e.platform):
            return e
    untagged = [e for e in images if not e.platform]
    if len(untagged) == 1 and len(images) == 1:
        return untagged[0]
    have = sorted({Platform(**_plat(e.platform)).__str__() for e in images if e.platform})
    raise OciError(f"no manifest for platform {platform} in index (available: {', '.join(have) or 'none'})")


def _plat(p: dict[str, Any] | None) -> dict[str, Any]:
    p = p or {}
    variant = p.get("variant")
    return {
        "os": str(p.get("os", "?")),
        "architecture": str(p.get("architecture", "?")),
        "variant": None if variant is None else str(variant),
    }


def manifest_media_type(raw: bytes) -> str:
    """The media type of an untrusted manifest or index document; :class:`OciError` if it is neither."""
    return mt.guess_media_type(_json_object(raw, "manifest"))


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Decode untrusted JSON that must be an object; every failure is an :class:`OciError`."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise OciError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OciError(f"{what} is not a JSON object")
    return doc


PREFIXES = ("oci:DIR[:tag]", "oci-archive:FILE", "docker-archive:FILE", "host/repo:tag|@digest")


def open_source(
    ref: str,
    *,
    insecure: bool = False,
    platform: str | None = None,
    credentials: tuple[str, str] | None = None,
    auth_files: bool = False,
) -> ImageSource:
    """Open ``oci:DIR[:tag]``, ``oci-archive:FILE``, ``docker-archive:FILE``, a bare path to one
    of those, or a registry reference ``host/repo:tag|@digest``.

    ``credentials`` go to the registry; without them and with ``auth_files`` the user's
    credential files are read (:mod:`hallmark.oci.auth`).
    """
    plat = Platform.parse(platform)
    if ref.startswith("oci:"):
        from hallmark.oci.layout import OciLayoutSource

        path, tag = split_layout_ref(ref[4:])
        return OciLayoutSource(path, tag, platform=plat)
    if ref.startswith(("docker-archive:", "oci-archive:")):
        from hallmark.oci.docker_archive import DockerArchiveSource

        return DockerArchiveSource(ref.partition(":")[2], platform=plat)
    local = open_local(ref, plat)
    if local is not None:
        return local
    from hallmark.oci.registry import Reference, RegistrySource

    hint = None
    if credentials is None and auth_files:
        from hallmark.oci.auth import CredentialsError, find_credentials

        parsed = Reference.parse(ref)
        try:
            found = find_credentials(parsed.host, parsed.repository)
        except CredentialsError as exc:
            raise OciError(str(exc)) from exc
        if found is not None:
            credentials, hint = found.credentials, found.hint or f"credentials from {found.source}"
    return RegistrySource(ref, insecure=insecure, platform=plat, credentials=credentials, auth_hint=hint)


def _looks_like_path(ref: str) -> bool:
    import os

    return (
        ref.startswith(("/", "./", "../", "~", ".\\"))
        or ref in (".", "..")
        or ref.endswith((".tar", ".tar.gz", ".tgz", ".tar.zst"))
        or os.path.exists(ref)
    )


def open_local(ref: str, platform: Platform | None = None) -> ImageSource | None:
    """A bare path recognised by its content: an OCI layout folder (``oci-layout``/``index.json``),
    or a tar with ``manifest.json`` (docker save) or ``oci-layout`` (OCI archive) at its root.

    None when ``ref`` does not look like a path (a registry reference); an :class:`OciError`
    naming the accepted prefixes when it is a path but neither kind of image.
    """
    import os
    import tarfile

    if not _looks_like_path(ref):
        return None
    path, tag = os.path.expanduser(ref), None
    if not os.path.exists(path):
        base, sep, maybe_tag = path.rpartition(":")
        if sep and base and "/" not in maybe_tag and os.path.isdir(base):
            path, tag = base, maybe_tag
        else:
            raise OciError(f"{ref}: no such file or folder (accepted: a path, or {', '.join(PREFIXES)})")
    why = ""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "index.json")):
            from hallmark.oci.layout import OciLayoutSource

            return OciLayoutSource(path, tag, platform=platform)
        why = "a folder without index.json/oci-layout (an OCI layout folder has both)"
        if os.path.isfile(os.path.join(path, "manifest.json")):
            why = "an unpacked docker save folder; give the tar file itself"
    elif os.path.isfile(path):
        try:
            with tarfile.open(path, "r:*") as tf:
                names = {os.path.normpath(n) for n in tf.getnames()}
        except (OSError, tarfile.TarError):
            names = None
            why = "not a tar file"
        if names is not None:
            if "manifest.json" in names or {"oci-layout", "index.json"} <= names:
                from hallmark.oci.docker_archive import DockerArchiveSource

                return DockerArchiveSource(path, platform=platform)
            why = "a tar without manifest.json (docker save) or oci-layout and index.json (OCI archive) at its root"
    else:
        why = "not a regular file or folder"
    raise OciError(f"{ref}: not an image: {why}; use one of {', '.join(PREFIXES)}")


def split_layout_ref(text: str) -> tuple[str, str | None]:
    """``DIR[:tag]`` -> (DIR, tag); a colon belongs to the tag only if what follows has no slash."""
    import os

    if os.path.isdir(text):
        return text, None
    path, sep, tag = text.rpartition(":")
    if sep and path and "/" not in tag:
        return path, tag
    return text, None
