"""Limits against hostile images and the one exception that marks an image "index failed: <reason>"."""

from __future__ import annotations

from dataclasses import dataclass


class IndexFailed(Exception):
    """The image cannot be indexed; ``reason`` is shown to users as ``index failed: <reason>``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Bounds on what one image may cost. Defaults fit real images (multi-GB layers, 200 MB jars).

    Exceeding a *layer* bound fails the image (it is hostile or broken). A single file over
    ``max_file_bytes`` is only skipped with a warning: a legitimately huge file must not hide
    every other package in the image.
    """

    max_file_bytes: int = 512 << 20  # bytes a detector may read from one file
    max_layer_bytes: int = 32 << 30  # uncompressed bytes in one layer
    max_entries_per_layer: int = 2_000_000
    max_ratio: float = 200.0  # uncompressed / compressed, checked once past bomb_floor
    bomb_floor: int = 64 << 20  # below this many uncompressed bytes the ratio is not checked
    max_symlink_hops: int = 40  # like Linux's MAXSYMLINKS
    max_nested_archive_depth: int = 4  # jar in war in ear ...
    max_path_length: int = 4096
