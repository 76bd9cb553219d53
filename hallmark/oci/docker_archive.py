"""``docker save`` tarballs (``docker-archive:FILE``), both the legacy and the OCI-in-tar (v25+) forms.

Blobs are read in place from the outer tarball (random access via :mod:`tarfile`), never extracted.
The legacy form has no manifest: one is synthesised from ``manifest.json`` and the config's
``rootfs.diff_ids`` (an uncompressed layer's digest *is* its diff_id, so no extra hashing pass).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from typing import IO, Any, BinaryIO, cast

from hallmark.oci import mediatypes as mt
from hallmark.oci.source import (
    Descriptor,
    ImageManifest,
    OciError,
    Platform,
    manifest_media_type,
    select_from_index,
)


class DockerArchiveSource:
    """An image inside a ``docker save`` tarball (the first image in it)."""

    def __init__(self, path: str, *, platform: Platform | None = None) -> None:
        self.path = path
        self.platform = platform or Platform()
        try:
            self._tar = tarfile.open(path, "r:*")
            self._members = {posixpath.normpath(m.name): m for m in self._tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError) as exc:
            raise OciError(f"{path}: cannot read docker archive: {exc}") from exc
        self._by_digest: dict[str, str] = {}  # digest -> member name, for synthesised manifests

    @property
    def name(self) -> str:
        return f"docker-archive:{self.path}"

    def _open_member(self, name: str) -> IO[bytes]:
        m = self._members.get(posixpath.normpath(name))
        f = self._tar.extractfile(m) if m is not None else None
        if f is None:
            raise OciError(f"{self.name}: missing {name}")
        return f

    def _read(self, name: str) -> bytes:
        with self._open_member(name) as f:
            return f.read()

    def get_manifest(self) -> ImageManifest:
        if "index.json" in self._members and "oci-layout" in self._members:
            return self._oci_manifest()
        try:
            entries = json.loads(self._read("manifest.json"))
            entry: dict[str, Any] = entries[0]
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise OciError(f"{self.name}: malformed manifest.json: {exc}") from exc
        config_name = str(entry["Config"])
        config = self._read(config_name)
        diff_ids = (json.loads(config).get("rootfs") or {}).get("diff_ids") or []
        layer_names = [str(x) for x in entry.get("Layers") or []]
        if len(diff_ids) != len(layer_names):
            raise OciError(f"{self.name}: {len(layer_names)} layers but {len(diff_ids)} diff_ids")
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self._by_digest[config_digest] = config_name
        layers = []
        for name, diff_id in zip(layer_names, diff_ids, strict=True):
            with self._open_member(name) as f:
                magic = f.read(4)
            size = self._members[posixpath.normpath(name)].size
            if magic[:2] == b"\x1f\x8b" or magic == b"\x28\xb5\x2f\xfd":
                digest, media = self._hash_member(name), mt.DOCKER_LAYER_GZIP
                if magic[:2] != b"\x1f\x8b":
                    media = mt.OCI_LAYER_ZSTD
            else:
                digest, media = str(diff_id), mt.DOCKER_LAYER_TAR
            self._by_digest[digest] = name
            layers.append({"mediaType": media, "digest": digest, "size": size})
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": layers,
        }
        return ImageManifest.parse(json.dumps(doc, separators=(",", ":")).encode())

    def _hash_member(self, name: str) -> str:
        h = hashlib.sha256()
        with self._open_member(name) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return "sha256:" + h.hexdigest()

    def _oci_manifest(self) -> ImageManifest:
        entries = json.loads(self._read("index.json")).get("manifests") or []
        if not entries:
            raise OciError(f"{self.name}: empty index.json")
        desc = Descriptor.from_json(entries[0])
        for _ in range(4):
            raw = self._read_digest(desc.digest)
            if manifest_media_type(raw) in mt.INDEX_TYPES:
                desc = select_from_index(raw, self.platform)
                continue
            return ImageManifest.parse(raw, desc.digest)
        raise OciError(f"{self.name}: image indexes nested too deeply")

    def _member_for(self, digest: str) -> str:
        if digest in self._by_digest:
            return self._by_digest[digest]
        algo, _, hexpart = digest.partition(":")
        return f"blobs/{algo}/{hexpart}"

    def _read_digest(self, digest: str) -> bytes:
        return self._read(self._member_for(digest))

    def get_config(self, manifest: ImageManifest) -> bytes:
        return self._read_digest(manifest.config.digest)

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return cast(BinaryIO, self._open_member(self._member_for(desc.digest)))

    def close(self) -> None:
        self._tar.close()
