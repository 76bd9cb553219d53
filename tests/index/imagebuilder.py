"""Builds small synthetic images (layer tars, OCI layouts, docker-archive tarballs) with tarfile only."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import zstandard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    None: "application/vnd.oci.image.layer.v1.tar",
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layer:
    """A tar layer built entry by entry, in the order given."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None) -> Layer:
        info.mtime = 1_700_000_000
        self.tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> Layer:
        raw = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(raw), mode
        return self._add(info, raw)

    def dir(self, path: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        return self._add(info)

    def symlink(self, path: str, target: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type, info.linkname = tarfile.SYMTYPE, target
        return self._add(info)

    def hardlink(self, path: str, target: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type, info.linkname = tarfile.LNKTYPE, target
        return self._add(info)

    def whiteout(self, path: str) -> Layer:
        d, _, base = path.rpartition("/")
        return self.file(f"{d}/.wh.{base}" if d else f".wh.{base}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def tar_bytes(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def compress(data: bytes, how: str | None) -> bytes:
    if how == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


@dataclass
class Image:
    """A built image: blobs by digest plus its manifest and config."""

    manifest: bytes
    config: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    layer_digests: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    def open_layer(self, digest: str) -> io.BytesIO:
        return io.BytesIO(self.blobs[digest])


def build_image(
    layers: list[tuple[bytes, str | None]], *, arch: str = "amd64", blob_override: dict[int, bytes] | None = None
) -> Image:
    """``layers`` are (tar bytes, compression). ``blob_override`` swaps a layer's stored bytes (bad digests)."""
    blobs: dict[str, bytes] = {}
    descs, diff_ids, layer_digests = [], [], []
    for i, (tar, how) in enumerate(layers):
        blob = compress(tar, how)
        digest = sha256(blob)
        blobs[digest] = (blob_override or {}).get(i, blob)
        descs.append({"mediaType": MEDIA[how], "digest": digest, "size": len(blob)})
        diff_ids.append(sha256(tar))
        layer_digests.append(digest)
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}}
    ).encode()
    blobs[sha256(config)] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": descs,
        }
    ).encode()
    blobs[sha256(manifest)] = manifest
    return Image(manifest, config, blobs, layer_digests)


def write_layout(path: str, images: dict[str, Image], index_platforms: dict[str, str] | None = None) -> None:
    """An OCI layout holding ``images`` by tag; ``index_platforms`` (tag -> "os/arch") wraps them in one index."""
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def put(data: bytes) -> str:
        d = sha256(data)
        with open(os.path.join(path, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(data)
        return d

    entries = []
    for tag, img in images.items():
        for blob in img.blobs.values():
            put(blob)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": img.digest,
                "size": len(img.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        )
    if index_platforms:
        inner = []
        for tag, e in zip(images, entries, strict=True):
            os_, arch = index_platforms[tag].split("/")
            inner.append({**e, "platform": {"os": os_, "architecture": arch}})
        idx = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": inner}).encode()
        entries = [
            {
                "mediaType": OCI_INDEX,
                "digest": put(idx),
                "size": len(idx),
                "annotations": {"org.opencontainers.image.ref.name": "multi"},
            }
        ]
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": entries}, f)


def write_docker_archive(path: str, layer_tars: list[bytes]) -> None:
    """Legacy ``docker save`` layout: manifest.json, <id>.json config, <id>/layer.tar."""
    diff_ids = [sha256(t) for t in layer_tars]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    config_name = sha256(config)[7:] + ".json"
    names = [f"{d[7:]}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [("manifest.json", manifest), (config_name, config), *zip(names, layer_tars)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_jar(entries: Mapping[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def pom(group: str, artifact: str, version: str) -> dict[str, str]:
    return {
        f"META-INF/maven/{group}/{artifact}/pom.properties": (
            f"#Generated by Maven\ngroupId={group}\nartifactId={artifact}\nversion={version}\n"
        )
    }


def dist_info(name: str, version: str, license: str | None = None) -> str:
    text = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if license:
        text += f"License: {license}\n"
    return text + "\nLong description here.\n"


def package_json(name: str, version: str, license: str = "MIT") -> str:
    return json.dumps({"name": name, "version": version, "license": license})
