"""Just enough ELF to find a named section's bytes (Rust's ``.dep-v0``, Go's ``.go.buildinfo``).

pyelftools would do it but wants a seekable file and parses far more than needed; the
section header table is a few fixed-size structs, read here from an in-memory binary.
"""

from __future__ import annotations

import struct

ELF_MAGIC = b"\x7fELF"


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """Bytes of section ``wanted`` or None (not ELF, no section headers, malformed, absent)."""
    if len(data) < 64 or not data.startswith(ELF_MAGIC):
        return None
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    try:
        if is64:
            (shoff,) = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
        else:
            (shoff,) = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
        if not shoff or shnum == 0 or shstrndx >= shnum or shoff + shnum * shentsize > len(data):
            return None

        def section(i: int) -> tuple[int, int, int]:
            base = shoff + i * shentsize
            (name,) = struct.unpack_from(end + "I", data, base)
            if is64:
                off, size = struct.unpack_from(end + "QQ", data, base + 0x18)
            else:
                off, size = struct.unpack_from(end + "II", data, base + 0x10)
            return name, off, size

        _, str_off, str_size = section(shstrndx)
        names = data[str_off : str_off + str_size]
        target = wanted.encode()
        for i in range(shnum):
            name_off, off, size = section(i)
            nul = names.find(b"\0", name_off)
            if names[name_off:nul] == target and off + size <= len(data):
                return data[off : off + size]
    except struct.error:
        return None
    return None
