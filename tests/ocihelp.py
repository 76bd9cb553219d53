"""Small helpers to make OCI content and push it over HTTP in tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def tar_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


def image(
    layers: list[bytes], config_extra: dict[str, Any] | None = None, **manifest_extra: Any
) -> tuple[bytes, bytes]:
    """(config bytes, manifest bytes) for gzip layers."""
    diff_ids = [sha256(gzip.decompress(layer)) for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
            **(config_extra or {}),
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER_GZ, layer) for layer in layers],
        **manifest_extra,
    }
    return config, json.dumps(manifest).encode()


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256(data)
    r = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    return digest


def push_manifest(
    client: httpx.Client, repo: str, ref: str, manifest: bytes, media_type: str = OCI_MANIFEST
) -> httpx.Response:
    return client.put(f"/v2/{repo}/manifests/{ref}", content=manifest, headers={"Content-Type": media_type})


def push_image(client: httpx.Client, repo: str, tag: str, files: dict[str, bytes] | None = None, **extra: Any) -> str:
    layer = tar_layer(files or {"hello.txt": repo.encode() + tag.encode()})
    config, manifest = image([layer], **extra)
    push_blob(client, repo, layer)
    push_blob(client, repo, config)
    r = push_manifest(client, repo, tag, manifest)
    assert r.status_code == 201, r.text
    return sha256(manifest)


def write_oci_layout(root: Path, tag: str, layers: list[bytes], config_extra: dict[str, Any] | None = None) -> str:
    """An OCI image layout directory holding one image; returns the manifest digest."""
    config, manifest = image(layers, config_extra)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for data in [*layers, config, manifest]:
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, manifest, annotations={"org.opencontainers.image.ref.name": tag})],
    }
    (root / "index.json").write_text(json.dumps(index))
    return sha256(manifest)
