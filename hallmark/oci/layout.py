"""OCI image layout folders (``oci:DIR[:tag]``), as written by skopeo, umoci, buildkit, docker save."""

from __future__ import annotations

import json
import os
from typing import BinaryIO

from hallmark.digest import parse_digest
from hallmark.oci import mediatypes as mt
from hallmark.oci.source import (
    Descriptor,
    ImageManifest,
    OciError,
    Platform,
    manifest_media_type,
    select_from_index,
)

REF_NAME = "org.opencontainers.image.ref.name"


class OciLayoutSource:
    """An image inside an OCI layout folder; blobs are read straight from ``blobs/<alg>/<hex>``."""

    def __init__(self, path: str, tag: str | None = None, *, platform: Platform | None = None) -> None:
        if not os.path.isfile(os.path.join(path, "index.json")):
            raise OciError(f"{path}: not an OCI layout (no index.json)")
        self.path = path
        self.tag = tag
        self.platform = platform or Platform()

    @property
    def name(self) -> str:
        return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")

    def read_blob(self, digest: str) -> bytes:
        with self._open_digest(digest) as f:
            return f.read()

    def _open_digest(self, digest: str) -> BinaryIO:
        algo, hexpart = parse_digest(digest)
        try:
            return open(os.path.join(self.path, "blobs", algo, hexpart), "rb")
        except FileNotFoundError as exc:
            raise OciError(f"{self.name}: blob {digest} missing from layout") from exc

    def _pick(self) -> Descriptor:
        with open(os.path.join(self.path, "index.json"), "rb") as f:
            try:
                entries = [Descriptor.from_json(d) for d in json.load(f).get("manifests") or []]
            except (ValueError, AttributeError) as exc:
                raise OciError(f"{self.name}: malformed index.json: {exc}") from exc
        if self.tag is not None:
            for e in entries:
                name = e.annotations.get(REF_NAME, "")
                if name == self.tag or name.endswith(":" + self.tag):
                    return e
            raise OciError(f"{self.name}: no manifest tagged {self.tag!r}")
        if len(entries) == 1:
            return entries[0]
        tags = sorted(e.annotations.get(REF_NAME, e.digest) for e in entries)
        raise OciError(f"{self.name}: layout holds {len(entries)} manifests; pick one with :TAG ({tags})")

    def get_manifest(self) -> ImageManifest:
        desc = self._pick()
        for _ in range(4):  # an index may nest another index; bounded so a cycle cannot hang us
            raw = self.read_blob(desc.digest)
            if manifest_media_type(raw) in mt.INDEX_TYPES:
                desc = select_from_index(raw, self.platform)
                continue
            return ImageManifest.parse(raw, desc.digest)
        raise OciError(f"{self.name}: image indexes nested too deeply")

    def get_config(self, manifest: ImageManifest) -> bytes:
        return self.read_blob(manifest.config.digest)

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return self._open_digest(desc.digest)

    def close(self) -> None:
        pass
