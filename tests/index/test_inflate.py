"""Gzip layers decompressed in a forked child (``hallmark.index.inflate``, ``inflate_apart``) give
what decompressing in the walking process gives: the same index, the same failures with the same
words (corrupt, truncated, a bomb, a wrong digest), and no child left behind."""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from hallmark.index import Limits, index_image
from hallmark.index.inflate import ForkedGunzip, InflateStopped, forked_gunzip
from tests.index.imagebuilder import Image, Layer, build_image, dist_info, package_json


def _files(img: Image, tmp: Path) -> Callable[[str], BinaryIO]:
    """``open_layer`` over regular files (a child can read only those)."""
    for digest, blob in img.blobs.items():
        (tmp / digest.replace(":", "-")).write_bytes(blob)
    return lambda digest: (tmp / digest.replace(":", "-")).open("rb")


def _layers() -> list[tuple[bytes, str | None]]:
    base = (
        Layer()
        .file("etc/os-release", "ID=debian\nVERSION_ID=12\n")
        .file("usr/lib/python3/dist-packages/req-2.31.0.dist-info/METADATA", dist_info("requests", "2.31.0"))
        .file("srv/big.bin", os.urandom(3 << 20))  # several ring slots
    )
    app = Layer().file("app/node_modules/left-pad/package.json", package_json("left-pad", "1.3.0"))
    return [(base.tar_bytes(), "gzip"), (app.tar_bytes(), "gzip")]


def _cut(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def _corrupt(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0xFF for b in blob[middle : middle + 64]) + blob[middle + 64 :]


CASES: dict[str, Callable[[], tuple[Image, Limits | None]]] = {
    "two layers": lambda: (build_image(_layers()), None),
    "truncated": lambda: (build_image(_layers(), blob_override={0: _cut(gzip.compress(_layers()[0][0]))}), None),
    "corrupt": lambda: (build_image(_layers(), blob_override={0: _corrupt(gzip.compress(_layers()[0][0]))}), None),
    "another blob": lambda: (build_image(_layers(), blob_override={1: gzip.compress(_layers()[1][0], 1)}), None),
    "bomb": lambda: (
        build_image([(Layer().file("zeros", b"\0" * (24 << 20)).tar_bytes(), "gzip")]),
        Limits(bomb_floor=4 << 20, max_ratio=100),
    ),
    "over the layer limit": lambda: (build_image(_layers()), Limits(max_layer_bytes=1 << 20)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_child_gives_the_index_the_walking_process_gives(case: str, tmp_path: Path) -> None:
    img, limits = CASES[case]()
    open_layer = _files(img, tmp_path)
    here = index_image(img.manifest, img.config, open_layer, limits=limits)
    apart = index_image(img.manifest, img.config, open_layer, limits=limits, inflate_apart=True)
    assert apart.to_json() == here.to_json()
    if case == "two layers":
        assert here.status == "done" and {p.name for p in here.packages} >= {"requests", "left-pad"}
    else:
        assert here.status == "failed" and here.error


def test_bytes_digest_and_count_are_those_of_the_file(tmp_path: Path) -> None:
    data = os.urandom(1 << 20) * 5 + b"tail"
    blob = gzip.compress(data)
    path = tmp_path / "layer.gz"
    path.write_bytes(blob)
    with path.open("rb") as f:
        reader = forked_gunzip(f, "sha256")
        assert reader is not None
        out = bytearray()
        while chunk := reader.read(1 << 20):
            out += chunk
        reader.close()
    assert bytes(out) == data
    assert reader.digest == hashlib.sha256(blob).hexdigest()
    assert reader.raw_count == len(blob)


def _gz(tmp: Path) -> Path:
    path = tmp / "layer.tar.gz"
    path.write_bytes(gzip.compress(b"x" * 1000))
    return path


def test_only_gzip_in_a_regular_file_goes_to_a_child(tmp_path: Path) -> None:
    plain = tmp_path / "layer.tar"
    plain.write_bytes(b"not gzip")
    with plain.open("rb") as f:
        assert forked_gunzip(f, "sha256") is None
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pipe, os.fdopen(w, "wb"):
        assert forked_gunzip(pipe, "sha256") is None  # a pipe: read in this process
    with _gz(tmp_path).open("rb") as f:  # the same bytes in a file of their own: a child
        reader = forked_gunzip(f, "sha256")
        assert reader is not None and reader.read(-1) == b"x" * 1000
        reader.close()
    archive = tmp_path / "image.tar"  # a docker-archive's layer is a member of one file: no fd of its own
    with tarfile.open(archive, "w") as tar:
        tar.add(_gz(tmp_path), arcname="layer.tar.gz")
    with tarfile.open(archive) as tar:
        member = tar.extractfile("layer.tar.gz")
        assert member is not None and member.read(2) == b"\x1f\x8b"
        member.seek(0)
        assert forked_gunzip(member, "sha256") is None


def _started(tmp_path: Path) -> tuple[ForkedGunzip, int]:
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(os.urandom(1 << 20) * 32, 1))  # more than the ring: the child waits
    with path.open("rb") as f:
        reader = forked_gunzip(f, None)
    assert reader is not None and reader.read(10)
    pid = reader.pid
    assert pid is not None
    return reader, pid


def test_closing_early_stops_the_child(tmp_path: Path) -> None:
    reader, pid = _started(tmp_path)
    reader.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left


def test_a_child_killed_is_not_taken_for_a_corrupt_layer(tmp_path: Path) -> None:
    """A killed child is an error of this run, not of the layer (an OSError would fail the layer as
    corrupt, and that failure would be cached)."""
    reader, pid = _started(tmp_path)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(InflateStopped):
        while reader.read(1 << 20):
            pass
    reader.close()


def test_progress_counts_the_bytes_the_child_reads(tmp_path: Path) -> None:
    """``hallmark sbom``'s bar follows the compressed bytes read, by this process or by a child."""
    img = build_image(_layers())
    total = sum(len(img.blobs[d]) for d in img.layer_digests)
    for apart in (False, True):
        calls: list[tuple[int, int]] = []
        r = index_image(
            img.manifest,
            img.config,
            _files(img, tmp_path),
            progress=lambda d, t: calls.append((d, t)),
            inflate_apart=apart,
        )
        assert r.status == "done"
        assert calls[-1] == (total, total)
        assert [c[0] for c in calls] == sorted(c[0] for c in calls) and len(calls) > 2
