"""YARA in two stages (hallmark.content.yara_stages): the gates are necessary conditions, so a
staged scan finds exactly what the whole rule set compiled at once finds, in the same order."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import yara_x

from hallmark.content import load_rules
from hallmark.content import rules as rules_mod
from hallmark.content.yara_stages import GATE_PREFIX, Magic, gate_source, magic_of

from .conftest import eicar

VIT_RULE = "reversinglabs/virus/Linux.Virus.Vit.yara"


def _vit_entry(data_dir: Path) -> bytes:
    """The virus's entry-point code as the shared rule spells it (wildcards as zero bytes)."""
    text = (data_dir / "yara" / VIT_RULE).read_text()
    hexpat = text.split("$vit_entry_point = {", 1)[1].split("}", 1)[0]
    return bytes.fromhex("".join(hexpat.split()).replace("??", "00"))


def _elf32(code_at_entry: bytes, tail: bytes = b"") -> bytes:
    """A minimal i386 executable whose entry point is ``code_at_entry`` (one PT_LOAD segment)."""
    base, entry_off = 0x08048000, 0x100
    body = bytearray(entry_off) + code_at_entry + tail
    header = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header += struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, base + entry_off, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<IIIIIIII", 1, 0, base, base, len(body), len(body), 5, 0x1000)
    body[: len(header) + len(phdr)] = header + phdr
    return bytes(body)


def _whole(files: list[Path], roots: list[Path]) -> yara_x.Scanner:
    """The rule files compiled at once, each in its namespace: what the stages must equal."""
    compiler = yara_x.Compiler()
    for f in files:
        compiler.new_namespace(rules_mod._namespace(f, roots))
        compiler.add_source(f.read_text(encoding="utf-8", errors="replace"), origin=str(f))
    return yara_x.Scanner(compiler.build())


def _namespaces(rules: yara_x.Rules) -> set[str]:
    return {rule.namespace for rule in rules}


def _names(matches: object) -> list[tuple[str, str]]:
    return [(m.namespace, m.identifier) for m in matches]  # type: ignore[attr-defined]


def test_gate_keeps_the_terms_without_a_module() -> None:
    src = """
    import "pe"
    rule a : tag {
        meta: author = "x"
        strings:
            $s = "condition: } {" ascii wide  // a text that looks like syntax
            $h = { 4D 5A [2-4] ( 90 | 91 ) ?? }
            $r = /a{2,3}"b\\/c/i
        condition:
            uint16(0) == 0x5A4D and ($s at pe.entry_point) and not pe.is_dll() and #h > 1 and $r
    }
    """
    gate = gate_source(src)
    assert gate is not None and "pe." not in gate.split("condition:")[1].split("(true or")[0]
    assert "(uint16(0) == 0x5A4D) and (#h > 1) and ($r)" in gate
    assert '$s = "condition: } {" ascii wide' in gate and '$r = /a{2,3}"b\\/c/i' in gate
    yara_x.compile(gate)  # the gate itself compiles, with no module


@pytest.mark.parametrize(
    "src",
    [
        'rule a { strings: $a = "x" condition: $a }',  # no module: nothing to gate
        'import "pe"\nrule a { strings: $a = "x" condition: $a or pe.number_of_sections > 3 }',  # top-level or
        'import "pe"\nrule a { condition: pe.is_pe }',  # nothing without the module
        'import "pe"\nglobal rule g { condition: filesize < 10MB }\n'
        "rule a { condition: uint16(0) == 0x5A4D and pe.is_pe }",
        'import "pe"\nprivate rule p { condition: pe.is_pe }\nrule a { condition: uint16(0) == 0x5A4D and not p }',
        'import "pe"\nrule a { condition: uint16(0) == 0x5A4D and pe.is_pe ',  # cut short
        'import "pe"\ninclude "other.yar"\nrule a { condition: uint16(0) == 0x5A4D and pe.is_pe }',
    ],
)
def test_files_that_cannot_be_split_safely_stay_whole(src: str) -> None:
    assert gate_source(src) is None


def test_rules_sharing_one_magic_test_share_one_gate() -> None:
    src = 'import "pe"\n' + "\n".join(
        f"rule c{i} {{ condition: uint16(0) == 0x5A4D and pe.number_of_signatures > {i} }}" for i in range(50)
    )
    gate = gate_source(src)
    assert gate is not None and gate.count("rule ") == 1


def test_staged_scan_equals_the_whole_set_on_the_shared_rules(data_dir: Path, tmp_path: Path) -> None:
    rules_mod.clear_caches()
    bundle = load_rules(data_dir, cache_dir=tmp_path / "yara")
    assert bundle.yara is not None and bundle.warnings == []
    staged = bundle.yara
    assert len(staged.pieces) >= 17  # the pe/elf rule files (the certificate list among them)
    assert not any(ns.startswith(GATE_PREFIX) for ns in staged.order)
    roots, _, files, _ = rules_mod._bundle_files(data_dir, True, True)
    whole = _whole(files, roots)

    code = _vit_entry(data_dir)
    vit = _elf32(code, b"\0" * 64 + b"vi324.tmp\0")
    corpus = {
        "vit": vit,
        "vit string only": _elf32(b"\x90" * 200, b"vi324.tmp"),  # the gate opens, the rule does not match
        "vit code elsewhere": _elf32(b"\x90" * 16 + code, b"vi324.tmp"),
        "mz": b"MZ" + bytes(200),
        "eicar": eicar(),
        "empty": b"",
    }
    for name in ("/bin/ls", "/bin/sh", "/usr/bin/python3", "/usr/bin/env"):
        p = Path(name)
        if p.is_file():
            corpus[name] = p.read_bytes()
    scanner = staged.scanner(30)
    for name, data in corpus.items():
        assert _names(scanner.scan(data)) == _names(whole.scan(data).matching_rules), name
    assert _names(scanner.scan(vit)) == [(f"yara/{VIT_RULE}", "Linux_Virus_Vit")]


def test_pieces_come_from_the_disk_cache_or_are_compiled_again(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "yara"
    rules_mod.clear_caches()
    load_rules(data_dir, cache_dir=cache)
    pieces = sorted(cache.glob("yara-*-*.bin"))
    assert len(pieces) >= 17
    vit = _elf32(_vit_entry(data_dir), b"vi324.tmp")
    for drop in (False, True):
        if drop:  # a piece lost from the cache is compiled from its rule file when needed
            for p in pieces:
                p.unlink()
        rules_mod.clear_caches()  # a new process: the first stage from disk, pieces when a gate opens
        bundle = load_rules(data_dir, cache_dir=cache)
        assert bundle.yara is not None
        found = [i for _, i in _names(bundle.yara.scanner(30).scan(vit))]
        assert found == ["Linux_Virus_Vit"]
    rules_mod.clear_caches()


@pytest.mark.parametrize(
    ("src", "magic"),
    [
        ('rule a { strings: $a = "x" condition: uint16(0) == 0x5A4D and $a }', Magic(2, False, 0x5A4D)),
        ('rule a { strings: $a = "x" condition: $a and (uint32(0) == 0x464C457F) }', Magic(4, False, 0x464C457F)),
        ("rule a { condition: uint32be(0) == 2135247942 and filesize < 1MB }", Magic(4, True, 0x7F454C46)),
        ("rule a { condition: ((uint8(0) == 77)) }", Magic(1, False, 77)),
        (  # every rule of the file, with other terms around it
            'rule a { condition: uint16(0) == 0x5A4D and filesize > 10 }\nprivate rule b { strings: $b = "y" '
            "condition: #b > 2 and uint16(0) == 0x5A4D }",
            Magic(2, False, 0x5A4D),
        ),
        ('rule a { strings: $a = "x" condition: $a }', None),  # no magic test
        ('rule a { strings: $a = "x" condition: uint16(0) == 0x5A4D and $a or $a at 0 }', None),  # top-level or
        (
            'rule a { strings: $a = "x" condition: uint16(0) == 0x5A4D and ($a or uint16(0) == 1) }',
            Magic(2, False, 0x5A4D),
        ),
        ("rule a { condition: uint16(0) == 0x5A4D }\nrule b { condition: uint32(0) == 0x464C457F }", None),  # two
        ("rule a { condition: uint16(0) == 0x5A4D }\nrule b { condition: filesize > 0 }", None),  # one without
        ("rule a { condition: not uint16(0) == 0x5A4D }", None),
        ("rule a { condition: uint16(2) == 0x5A4D }", None),  # not at offset 0
        ("rule a { condition: uint16(0) != 0x5A4D }", None),
        ("rule a { condition: uint16(0) == 0x5A4D + 1 }", None),
        ("rule a { condition: uint16(0) == 0x1FFFF }", None),  # cannot be true: left to yara-x
        ("rule a { condition: uint16(0) == 0x5A4D and", None),  # cut short
    ],
)
def test_magic_of_a_rule_file(src: str, magic: Magic | None) -> None:
    assert magic_of(src) == magic


def test_magic_reads_the_number_as_yara_does() -> None:
    mz, elf_be = Magic(2, False, 0x5A4D), Magic(4, True, 0x7F454C46)
    assert mz.matches(b"MZ\x90\x00") and not mz.matches(b"ZM..") and not mz.matches(b"M")
    assert elf_be.matches(b"\x7fELF\x02") and not elf_be.matches(b"\x7fEL")


def test_rules_split_by_magic_find_what_the_whole_set_finds(tmp_path: Path) -> None:
    """Rule files guarded by a magic number are scanned only on files that start with it; the
    findings, and their order, are those of all the files compiled together."""
    root = tmp_path / "rules"
    yara_dir = root / "yara"
    yara_dir.mkdir(parents=True)
    sources = {
        "a_any.yar": 'rule any_x { strings: $x = "needle" condition: $x }',
        "b_mz.yar": 'rule mz_x { strings: $x = "needle" condition: uint16(0) == 0x5A4D and $x }\n'
        'rule mz_y { strings: $y = "other" condition: $y and uint16(0) == 0x5A4D }',
        "c_elf.yar": 'rule elf_x { strings: $x = "needle" condition: uint32(0) == 0x464C457F and #x >= 1 }',
        "d_or.yar": 'rule or_x { strings: $x = "needle" condition: uint16(0) == 0x5A4D and $x or $x at 4 }',
        "e_pe.yar": 'import "pe"\nrule pe_x { strings: $x = "needle" '
        "condition: uint16(0) == 0x5A4D and $x and not pe.is_pe }",
        "f_mz_late.yar": 'rule mz_z { strings: $x = "needle" condition: uint16(0) == 0x5A4D and $x }',
        "g_any_late.yar": 'rule any_late { strings: $o = "other" condition: $o }',
    }
    for name, src in sources.items():
        (yara_dir / name).write_text(src)
    rules_mod.clear_caches()
    bundle = load_rules(root, include_builtin=False, cache_dir=tmp_path / "cache")
    assert bundle.yara is not None and bundle.warnings == []
    guarded = {magic: _namespaces(r) for magic, r in bundle.yara.guarded}
    assert guarded[Magic(2, False, 0x5A4D)] >= {"yara/b_mz.yar", "yara/f_mz_late.yar"}
    assert guarded[Magic(4, False, 0x464C457F)] == {"yara/c_elf.yar"}
    unguarded = {"yara/a_any.yar", "yara/d_or.yar", "yara/g_any_late.yar"}
    assert not any(ns in unguarded for names in guarded.values() for ns in names)
    roots, _, files, _ = rules_mod._bundle_files(root, False, True)
    whole = _whole(files, roots)
    corpus = [
        b"MZ needle other",
        b"MZ..needle",
        b"\x7fELF needle",
        b"\x7fEL needle",
        b"text needle other",
        b"M",
        b"",
        b"ZM needle",
        b"MZ other",  # no gate opens: the two first stages' findings are put in rule-file order
        b"abcdneedle",  # or_x without MZ: its top-level or keeps it in the first stage for every file
    ]
    for fresh in (True, False):  # compiled now, then read back from the disk cache
        if not fresh:
            rules_mod.clear_caches()
            bundle = load_rules(root, include_builtin=False, cache_dir=tmp_path / "cache")
            assert bundle.yara is not None and len(bundle.yara.guarded) == len(guarded)
        assert bundle.yara is not None
        scanner = bundle.yara.scanner(30)
        for data in corpus:
            assert _names(scanner.scan(data)) == _names(whole.scan(data).matching_rules), data
    assert _names(scanner.scan(b"MZ needle other")) == [
        ("yara/a_any.yar", "any_x"),
        ("yara/b_mz.yar", "mz_x"),
        ("yara/b_mz.yar", "mz_y"),
        ("yara/d_or.yar", "or_x"),
        ("yara/e_pe.yar", "pe_x"),
        ("yara/f_mz_late.yar", "mz_z"),
        ("yara/g_any_late.yar", "any_late"),
    ]
