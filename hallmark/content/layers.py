"""Cross-layer view: which file findings are still visible in the final filesystem.

A file deleted by a later layer (whiteout) is gone from the container but still inside the
earlier layer's blob, downloadable by anyone who can pull the image. ``LayerHistory`` records
what each layer adds, deletes (``.wh.<name>``) and hides (``.wh..wh..opq``), following the
OCI image-spec layer rules, and ``correlate_layers`` marks each finding ``present``,
``removed`` (with the deleting layer) or ``replaced`` (a later layer wrote the same path).
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable
from typing import Protocol

from hallmark.content.model import Finding, Status
from hallmark.content.scanner import normalize_path

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class LayerView(Protocol):
    """What ``correlate_layers`` needs; the index walker may provide its own implementation."""

    def fate(self, path: str, layer_index: int) -> tuple[Status, int | None]: ...


def _ancestors(path: str) -> Iterable[str]:
    """Strict ancestors of an absolute path, nearest first (``/a/b/c`` -> ``/a/b``, ``/a``, ``/``)."""
    while path != "/":
        path = posixpath.dirname(path)
        yield path


class LayerHistory:
    """Per-path events of every layer, in layer order (index 0 = base layer)."""

    def __init__(self) -> None:
        self._adds: dict[str, list[int]] = {}
        self._deletes: dict[str, list[int]] = {}
        self._opaques: dict[str, list[int]] = {}

    @staticmethod
    def _first_after(layers: list[int] | None, layer: int) -> int | None:
        return min((n for n in layers or () if n > layer), default=None)

    def add(self, layer_index: int, path: str) -> None:
        self._adds.setdefault(normalize_path(path), []).append(layer_index)

    def delete(self, layer_index: int, path: str) -> None:
        self._deletes.setdefault(normalize_path(path), []).append(layer_index)

    def opaque(self, layer_index: int, directory: str) -> None:
        self._opaques.setdefault(normalize_path(directory), []).append(layer_index)

    def record_tar_member(self, layer_index: int, name: str) -> None:
        """Interpret one tar member name: a whiteout, an opaque marker, or an added path."""
        path = normalize_path(name)
        base = posixpath.basename(path)
        parent = posixpath.dirname(path)
        if base == OPAQUE_MARKER:
            self.opaque(layer_index, parent)
        elif base.startswith(WHITEOUT_PREFIX):
            self.delete(layer_index, posixpath.join(parent, base[len(WHITEOUT_PREFIX) :]))
        else:
            self.add(layer_index, path)

    def fate(self, path: str, layer_index: int) -> tuple[Status, int | None]:
        """The first later event decides; a same-layer opaque-then-re-add counts as replaced."""
        path = normalize_path(path)
        replaced = self._first_after(self._adds.get(path), layer_index)
        removed: int | None = self._first_after(self._deletes.get(path), layer_index)
        for anc in _ancestors(path):
            for n in (
                self._first_after(self._deletes.get(anc), layer_index),
                self._first_after(self._opaques.get(anc), layer_index),
            ):
                if n is not None and (removed is None or n < removed):
                    removed = n
        if replaced is not None and (removed is None or replaced <= removed):
            return "replaced", replaced
        if removed is not None:
            return "removed", removed
        return "present", None


def correlate_layers(findings: Iterable[Finding], view: LayerView) -> list[Finding]:
    """Set ``status``/``removed_in_layer`` on file findings; others pass through unchanged."""
    out: list[Finding] = []
    for f in findings:
        outer = f.outer_path
        if outer is None or f.layer_index is None:
            out.append(f)
            continue
        status, layer = view.fate(outer, f.layer_index)
        out.append(dataclasses.replace(f, status=status, removed_in_layer=layer))
    return out


def still_downloadable(findings: Iterable[Finding]) -> list[Finding]:
    """Findings hidden from the final filesystem but still in a layer blob ("removed in N,
    still present in M"): the ones a final-filesystem-only scanner misses."""
    return [f for f in findings if f.status in ("removed", "replaced")]
