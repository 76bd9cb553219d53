"""Tiny stand-in for the index layer walker: stream a tar layer (plain or gzip) with
``tarfile`` and feed every entry to a ``ContentScanner``. Used by the tests; the real
walker in ``hallmark.index`` replaces it and calls the same scanner methods."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from hallmark.content.layers import LayerHistory, correlate_layers
from hallmark.content.model import ScanOutcome
from hallmark.content.scanner import ContentScanner


@dataclass
class TarEntry:
    name: str
    mode: int
    size: int
    kind: str  # "file", "dir", "symlink", "link", "other"
    reader: IO[bytes] | None  # only for "file", valid until the next entry is read


def iter_tar_layer(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[TarEntry]:
    """Stream entries in order (``r|*``: no seeking, gzip detected from the magic bytes)."""
    if isinstance(source, str | os.PathLike):
        tf = tarfile.open(source, mode="r|*")
    else:
        tf = tarfile.open(fileobj=source, mode="r|*")
    with tf:
        for m in tf:
            kind = (
                "file"
                if m.isreg()
                else "dir"
                if m.isdir()
                else "symlink"
                if m.issym()
                else "link"
                if m.islnk()
                else "other"
            )
            yield TarEntry(m.name, m.mode, m.size, kind, tf.extractfile(m) if kind == "file" else None)


def scan_layers(
    scanner: ContentScanner,
    layers: Sequence[tuple[str, str | os.PathLike[str] | IO[bytes]]],
    config_doc: dict[str, Any] | None = None,
) -> ScanOutcome:
    """Scan ``(digest, tar)`` layers in order plus the config; findings correlated across layers."""
    history = LayerHistory()
    total = ScanOutcome()
    for index, (digest, source) in enumerate(layers):
        for entry in iter_tar_layer(source):
            history.record_tar_member(index, entry.name)
            if entry.kind == "file" and entry.reader is not None:
                total.extend(scanner.scan_file(entry.name, index, digest, entry.reader, entry.size, mode=entry.mode))
            elif entry.kind == "dir":
                total.findings.extend(scanner.scan_metadata(entry.name, index, digest, entry.mode, is_dir=True))
    if config_doc is not None:
        total.extend(scanner.scan_config(config_doc))
    total.findings = correlate_layers(total.findings, history)
    return total
