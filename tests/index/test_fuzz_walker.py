"""Property-based tests of the tar walker: random headers, sizes, PAX records, GNU long names, sparse entries.

The walker's documented failure is :class:`IndexFailed` (a bad *entry name* is a warning, a bad
*archive* fails the image); anything else escaping it is a bug. The read position must never
move backwards, and indexing a fuzzed layer never ends in "internal error". Bounded (a few
hundred examples, small limits) so the file runs in seconds.
"""

from __future__ import annotations

import gzip
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hallmark.index import IndexFailed, Limits, index_image, iter_layer
from hallmark.index.walker import FILE, TarReader
from hallmark.oci.source import Descriptor
from tests.index.imagebuilder import build_image, sha256

LIMITS = Limits(
    max_entries_per_layer=200,
    max_layer_bytes=1 << 20,
    max_path_length=300,
    max_file_bytes=1 << 16,
    max_entries_per_image=300,
    max_packages_per_image=50,
)
FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

names = st.one_of(
    st.sampled_from(
        [b"a", b"etc/os-release", b"var/lib/dpkg/status", b"/abs/x", b"../up", b"a/.wh.b", b".wh..wh..opq"]
    ),
    st.binary(min_size=0, max_size=120),
    st.lists(
        st.sampled_from([b"d", b"..", b".", b"", b"\xe9", b"\xff\xfe", b"node_modules", b".wh.x"]), max_size=8
    ).map(b"/".join),
)
flags = st.one_of(st.sampled_from(list(b"0125734LKxgS")), st.integers(0, 255))
octal_fields = st.one_of(
    st.integers(0, 4096).map(lambda n: b"%011o\0" % n),
    st.integers(-(1 << 40), 1 << 40).map(
        lambda n: bytes([0xFF if n < 0 else 0x80]) + (n % (1 << 88)).to_bytes(11, "big")
    ),  # GNU base-256, negative too
    st.binary(min_size=12, max_size=12),
)
pax_values = st.one_of(
    st.integers(-5000, 5000).map(lambda n: str(n).encode()),
    st.integers(-8, 8).map(lambda k: str(512 * k).encode()),  # whole blocks, backwards too
    st.sampled_from([b"", b" 5", b"+1", b"1_0", b"0x10", b"99999999999999999999999", b"\xe9", b"a\0b"]),
    st.binary(max_size=40),
)
pax_keys = st.sampled_from(
    [
        b"path",
        b"linkpath",
        b"size",
        b"size",
        b"size",
        b"GNU.sparse.major",
        b"GNU.sparse.minor",
        b"GNU.sparse.name",
        b"GNU.sparse.realsize",
        b"GNU.sparse.size",
        b"GNU.sparse.map",
        b"mtime",
        b"\xff",
    ]
)


def header(name: bytes, flag: int, size: bytes, link: bytes, extra: bytes, good_checksum: bool) -> bytes:
    block = bytearray(512)
    block[0:100] = name[:100].ljust(100, b"\0")
    block[100:108] = b"0000644\0"
    block[124:136] = size
    block[156] = flag
    block[157:257] = link[:100].ljust(100, b"\0")
    block[257:263] = b"ustar\0"
    block[345 : 345 + len(extra[:167])] = extra[:167]  # prefix, sparse map, realsize: whatever the fuzzer says
    block[148:156] = b"        "
    if good_checksum:
        block[148:156] = b"%06o\0 " % sum(block)
    else:
        block[148:156] = b"%07o\0" % (sum(block) ^ 1)
    return bytes(block)


@st.composite
def pax_record(draw: st.DrawFn) -> bytes:
    key = draw(pax_keys)
    value = draw(
        pax_values if key != b"size" or draw(st.booleans()) else st.sampled_from([b"-512", b"-1024", b"-1536"])
    )
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    length += len(str(length)) - len(str(len(body)))
    if draw(st.integers(0, 7)) == 0:
        length = draw(st.integers(-3, 200))  # a lying record length
    return str(length).encode() + body


@st.composite
def member(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["plain", "pax", "pax", "longname", "sparse", "garbage"]))
    data = draw(st.binary(max_size=1200))
    good = draw(st.integers(0, 9)) > 0
    out = b""
    if kind == "pax":
        records = b"".join(draw(st.lists(pax_record(), max_size=4)))
        out += header(b"././@PaxHeader", ord("x"), b"%011o\0" % len(records), b"", b"", good)
        out += records + b"\0" * (-len(records) % 512)
    elif kind == "longname":
        long = draw(names) * draw(st.integers(1, 5))
        flag = draw(st.sampled_from([ord("L"), ord("K")]))
        out += header(b"././@LongLink", flag, b"%011o\0" % (len(long) + 1), b"", b"", good)
        out += long + b"\0" * (-len(long) % 512 or 512)
    elif kind == "sparse":
        extra = draw(st.binary(min_size=0, max_size=167))
        out += header(draw(names), ord("S"), b"%011o\0" % len(data), b"", extra, good)
        for _ in range(draw(st.integers(0, 2))):
            out += draw(st.binary(min_size=512, max_size=512))
        return out + data + b"\0" * (-len(data) % 512)
    elif kind == "garbage":
        return draw(st.binary(min_size=1, max_size=1024))
    size = draw(st.one_of(st.just(b"%011o\0" % len(data)), octal_fields))
    out += header(draw(names), draw(flags), size, draw(names), draw(st.binary(max_size=167)), good)
    return out + data + b"\0" * (-len(data) % 512)


@st.composite
def layer(draw: st.DrawFn) -> bytes:
    tar = b"".join(draw(st.lists(member(), min_size=1, max_size=6)))
    if draw(st.booleans()):
        tar += b"\0" * 1024
    cut = draw(st.integers(0, 3))
    if cut == 1:
        tar = tar[: draw(st.integers(0, len(tar)))]
    elif cut == 2 and tar:
        i = draw(st.integers(0, len(tar) - 1))
        tar = tar[:i] + bytes([tar[i] ^ draw(st.integers(1, 255))]) + tar[i + 1 :]
    return tar


def walk(blob: bytes) -> list[str]:
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar", sha256(blob), len(blob))
    warnings: list[str] = []
    out = []
    for e in iter_layer(io.BytesIO(blob), desc, 0, LIMITS, warn=warnings.append):
        out.append(e.path)
        if e.kind == FILE and len(out) % 2:
            with e.open() as f:
                f.read(e.size + 10)
    return out


@FUZZ
@given(layer(), st.booleans())
def test_walker_raises_only_index_failed(tar: bytes, gz: bool) -> None:
    blob = gzip.compress(tar, mtime=0) if gz else tar
    try:
        paths = walk(blob)
    except IndexFailed as exc:
        assert exc.reason
        return
    for p in paths:
        assert not p.startswith("/") and "\0" not in p
        assert p != ".." and not p.startswith("../")


class Watched(TarReader):
    """Checks after every internal move that the position in the tar stream did not go back."""

    def __init__(self, stream: io.BytesIO) -> None:
        super().__init__(stream, "fuzz", LIMITS.max_layer_bytes)
        self.source = stream
        self.last = 0

    def position(self) -> int:
        return self.source.tell() - (len(self.buf) - self.pos)

    def moved(self) -> None:
        now = self.position()
        assert now >= self.last, f"read position went back from {self.last} to {now}"
        self.last = now

    def _skip(self, n: int) -> None:
        assert n >= 0, f"asked to skip {n} bytes"
        super()._skip(n)
        self.moved()

    def _read(self, n: int) -> bytes:
        out = super()._read(n)
        self.moved()
        return out

    def read_member_into(self, buffer: memoryview) -> int:
        out = super().read_member_into(buffer)
        self.moved()
        return out


@FUZZ
@given(layer())
def test_read_position_never_moves_backwards(tar: bytes) -> None:
    reader = Watched(io.BytesIO(tar))
    try:
        while reader.next() is not None:
            if reader.remaining > 0 and reader.serial % 2:
                reader.read_member_into(memoryview(bytearray(reader.remaining // 2 + 1)))
    except IndexFailed:
        pass
    reader.moved()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(layer(), min_size=1, max_size=3))
def test_indexing_a_fuzzed_image_never_hits_an_internal_error(tars: list[bytes]) -> None:
    img = build_image([(t, None) for t in tars])
    r = index_image(img.manifest, img.config, img.open_layer, limits=LIMITS)
    assert r.status in ("done", "failed")
    assert not (r.error or "").startswith(("internal error", "I/O error")), r.error
