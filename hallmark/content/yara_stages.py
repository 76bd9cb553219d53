"""YARA rules in two stages, so a file pays for the PE and ELF modules only when a rule could match it.

Why: yara-x runs every imported module (``pe``, ``elf``, ...) on every file it scans, and the
Python binding turns each module's output into Python objects, whether or not any rule could
match the file. In the shared rule set one rule imports ``elf``: parsing the ~700 ELF files
of a Debian minbase image for it cost 0.46 s per scan. 931 certificate rules import ``pe``:
loading them is 0.33 of the 0.37 s that loading the whole compiled set takes, and every file
pays the ``pe`` output. Yet each of those rules starts with a test that needs no module (the
``MZ`` or ``\\x7fELF`` magic) and most need one of their own strings.

So a rule file that imports a module is compiled twice:

* a **gate** in the first stage: each rule reduced to the conditions it cannot match without
  (the top-level ``and`` terms of its condition that use no module), with the same strings;
* the **full** file, compiled on its own and loaded only when a gate first matches.

Every file is scanned once with the first stage: the files without imports plus all gates, no
module. A file that matches a gate is scanned again with that rule file's full rules, and only
full rules make findings. A gate is a necessary condition of its rule, so the findings are the
ones the whole set compiled together gives (tests/content/test_yara_stages.py compares both).
A rule file is kept whole in the first stage (as before) when it cannot be split safely: a
``global`` rule, a rule used by another rule, an ``include``, a condition whose top level is an
``or`` or that has no term without a module, or anything the small tokenizer below does not
know. The tokenizer is written here because yara-x exposes no syntax tree to Python; it only
has to find sections, strings, parentheses and the words ``and``/``or``.

The first stage is split once more, by file type. 1,200 of the 1,204 shared rules test a magic
number at offset 0 as a top-level ``and`` term (``uint16(0) == 0x5A4D``: a PE file; ``uint32(0)
== 0x464C457F``: ELF), and such a rule cannot match a file that starts otherwise; yet yara-x
searches every file for every rule's strings before it evaluates a condition. So a rule file
(or its gate) whose every rule has the same such term goes into a first-stage set of its own
(:func:`magic_of`), scanned only on files that start with that number: a text file meets the
few rules that need no magic, an ELF file those and the ELF ones. Again no rule is skipped on a
file it could match.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yara_x

GATE_PREFIX = "hallmark-gate:"

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<num>0x[0-9A-Fa-f]+|0o[0-7]+|\d+(?:\.\d+)?(?:KB|MB)?)
  | (?P<op>\.\.|==|!=|<=|>=|<<|>>|[-+*\\%&|^~<>()\[\]{}:=,./])
  | (?P<ident>[$#@!]?[A-Za-z0-9_]*\*?)
    """,
    re.S | re.X,
)
_REGEX = re.compile(r"/(?:\\.|[^/\\\n])*/[is]*", re.S)
_HEX = re.compile(r"\{[^}]*\}", re.S)


class Unsplittable(Exception):
    """The file is kept whole: the splitter is not sure what it means."""


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int


def _tokens(src: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos, n = 0, len(src)
    while pos < n:
        prev = out[-1].text if out else ""
        if prev in ("=", "matches") and src[pos] == "/":  # a regular expression literal
            m = _REGEX.match(src, pos)
            kind = "regex"
        elif prev == "=" and src[pos] == "{":  # a hex pattern (may hold comments and jumps)
            m = _HEX.match(src, pos)
            kind = "hex"
        else:
            m = _TOKEN.match(src, pos)
            kind = m.lastgroup or "" if m else ""
        if m is None or m.end() == pos:
            raise Unsplittable(f"cannot read the rule text at offset {pos}")
        if kind not in ("ws", "comment"):
            out.append(_Tok(kind, m.group(), pos, m.end()))
        pos = m.end()
    return out


@dataclass(frozen=True, slots=True)
class Magic:
    """A magic number at offset 0 as YARA reads it: ``uint<8*width>[be](0) == value``."""

    width: int  # bytes: 1, 2 or 4
    big: bool  # the ``be`` variants
    value: int

    def matches(self, data: bytes) -> bool:
        """Whether the term is true of ``data`` (a file shorter than the number: undefined, so false)."""
        return len(data) >= self.width and int.from_bytes(data[: self.width], "big" if self.big else "little") == (
            self.value
        )


_MAGIC_FUNCS = {
    "uint8": (1, False),
    "uint16": (2, False),
    "uint32": (4, False),
    "uint16be": (2, True),
    "uint32be": (4, True),
}


def _magic_term(term: list[_Tok]) -> Magic | None:
    """The magic test a top-level term is (``uint16(0) == 0x5A4D``, in parentheses or not), or None."""
    while len(term) > 2 and term[0].text == "(" and term[-1].text == ")" and _closes_at_end(term):
        term = term[1:-1]
    texts = [t.text for t in term]
    if len(texts) != 6 or texts[1:5] != ["(", "0", ")", "=="] or texts[0] not in _MAGIC_FUNCS:
        return None
    width, big = _MAGIC_FUNCS[texts[0]]
    raw = texts[5]
    if term[5].kind != "num" or raw.endswith(("KB", "MB")) or "." in raw:
        return None
    value = int(raw, 0) if raw.startswith(("0x", "0o")) else int(raw)
    return Magic(width, big, value) if value < 1 << (8 * width) else None


def _closes_at_end(term: list[_Tok]) -> bool:
    """Whether the parenthesis opening ``term`` is the one closing it."""
    depth = 0
    for k, t in enumerate(term):
        depth += (t.text == "(") - (t.text == ")")
        if depth == 0:
            return k == len(term) - 1
    return False


def magic_of(src: str) -> Magic | None:
    """The magic test that every rule of a rule file has as a top-level ``and`` term, or None
    (no such common test, or a file the small parser is not sure of): the file's rules can only
    match a file starting with that number."""
    try:
        _, rules = _parse(src)
    except Unsplittable:
        return None
    common: Magic | None = None
    for rule in rules:
        found = {m for term in _terms(rule.condition) if (m := _magic_term(term)) is not None}
        if common is None and len(found) == 1:
            common = next(iter(found))
        if common is None or common not in found:
            return None
    return common


@dataclass(slots=True)
class _Rule:
    name: str
    modifiers: tuple[str, ...]
    strings: tuple[int, int] | None  # source span of the strings section's body
    condition: list[_Tok] = field(default_factory=list)


def _parse(src: str) -> tuple[set[str], list[_Rule]]:
    toks = _tokens(src)
    imports: set[str] = set()
    rules: list[_Rule] = []
    i, n = 0, len(toks)

    def at(k: int) -> str:
        if k >= n:
            raise Unsplittable("the rule text ends early")
        return toks[k].text

    while i < n:
        word = at(i)
        if word == "import":
            imports.add(at(i + 1).strip('"'))
            i += 2
            continue
        modifiers: list[str] = []
        while at(i) in ("private", "global"):
            modifiers.append(at(i))
            i += 1
        if at(i) != "rule":
            raise Unsplittable(f"unexpected {at(i)!r}")
        rule = _Rule(at(i + 1), tuple(modifiers), None)
        i += 2
        while at(i) != "{":  # tags
            i += 1
        i += 1
        section, depth, first = "", 0, -1
        while True:
            t = at(i)
            if depth == 0 and t == "}":
                if section == "strings" and first >= 0:
                    rule.strings = (toks[first].start, toks[i - 1].end)
                i += 1
                break
            if depth == 0 and t in ("meta", "strings", "condition") and at(i + 1) == ":":
                if section == "strings" and first >= 0:
                    rule.strings = (toks[first].start, toks[i - 1].end)
                section, first = t, -1
                i += 2
                continue
            depth += (t in ("(", "[")) - (t in (")", "]"))
            if depth < 0:
                raise Unsplittable("unbalanced parentheses")
            if first < 0:
                first = i
            if section == "condition":
                rule.condition.append(toks[i])
            i += 1
        if not rule.condition:
            raise Unsplittable(f"rule {rule.name} has no condition")
        rules.append(rule)
    return imports, rules


def _terms(condition: list[_Tok]) -> list[list[_Tok]]:
    """The top-level ``and`` terms (one term when the top level is an ``or``)."""
    depth, terms, cur = 0, [], []  # type: ignore[var-annotated]
    for t in condition:
        if t.text in ("(", "["):
            depth += 1
        elif t.text in (")", "]"):
            depth -= 1
        if depth == 0 and t.kind == "ident" and t.text == "or":
            return [condition]
        if depth == 0 and t.kind == "ident" and t.text == "and":
            terms.append(cur)
            cur = []
            continue
        cur.append(t)
    terms.append(cur)
    return [term for term in terms if term]


def gate_source(src: str) -> str | None:
    """The first-stage gate of one rule file, or None when the file has no module import (it
    needs no gate) or cannot be split safely (it stays whole in the first stage)."""
    try:
        imports, rules = _parse(src)
    except Unsplittable:
        return None
    if not imports:
        return None
    names = {r.name for r in rules}
    bare: set[str] = set()
    out: list[str] = []
    for k, rule in enumerate(rules):
        if "global" in rule.modifiers or any(t.kind == "ident" and t.text in names for t in rule.condition):
            return None
        kept = [
            src[term[0].start : term[-1].end]
            for term in _terms(rule.condition)
            if not any(t.kind == "ident" and t.text in imports for t in term)
        ]
        if not kept:
            return None
        condition = " and ".join(f"({c})" for c in kept)
        if rule.strings is None:
            if condition not in bare:  # many rules share one magic test: one gate for them
                bare.add(condition)
                out.append(f"rule g{k} {{\n  condition:\n    {condition}\n}}")
            continue
        body = src[rule.strings[0] : rule.strings[1]]
        out.append(f"rule g{k} {{\n  strings:\n    {body}\n  condition:\n    {condition} and (true or any of them)\n}}")
    return "\n".join(out)


class Piece:
    """One rule file's full rules, compiled alone; loaded on first use (each process its own)."""

    def __init__(self, namespace: str, load: Callable[[], yara_x.Rules]) -> None:
        self.namespace = namespace
        self._load = load
        self._rules: yara_x.Rules | None = None
        self._lock = threading.Lock()

    def rules(self) -> yara_x.Rules:
        with self._lock:
            if self._rules is None:
                self._rules = self._load()
            return self._rules


@dataclass
class StagedRules:
    """The first stage (files without modules, and gates: ``front`` for every file, each of
    ``guarded`` for files with its magic number) and the full rule files behind the gates,
    keyed by gate namespace; ``order`` puts findings in rule-file order."""

    front: yara_x.Rules
    pieces: dict[str, Piece]
    order: dict[str, int]
    guarded: list[tuple[Magic, yara_x.Rules]] = field(default_factory=list)

    def scanner(self, timeout_seconds: int) -> StagedScanner:
        return StagedScanner(self, timeout_seconds)


class StagedScanner:
    """``scan`` gives the matching rules the whole set would give, in the same order. Like a
    yara-x scanner, one per thread (a worker process makes its own)."""

    def __init__(self, rules: StagedRules, timeout_seconds: int) -> None:
        self._rules = rules
        self._timeout = timeout_seconds
        self._front = self._new(rules.front)
        self._guarded = [(magic, self._new(r)) for magic, r in rules.guarded]
        self._behind: dict[str, yara_x.Scanner] = {}

    def _new(self, rules: yara_x.Rules) -> yara_x.Scanner:
        scanner = yara_x.Scanner(rules)
        scanner.set_timeout(self._timeout)
        return scanner

    def scan(self, data: bytes) -> list[Any]:
        """Matching ``yara_x.Rule`` objects; raises yara-x's ``TimeoutError``/``ScanError``."""
        found: list[Any] = []
        gates: dict[str, None] = {}
        fronts = [self._front] + [scanner for magic, scanner in self._guarded if magic.matches(data)]
        for front in fronts:
            for rule in front.scan(data).matching_rules:
                if rule.namespace.startswith(GATE_PREFIX):
                    gates[rule.namespace] = None
                else:
                    found.append(rule)
        for ns in gates:
            scanner = self._behind.get(ns)
            if scanner is None:
                scanner = self._behind[ns] = self._new(self._rules.pieces[ns].rules())
            found.extend(scanner.scan(data).matching_rules)
        if gates or len(fronts) > 1:  # as one set would give them; stable: within a file, yara-x's order
            order = self._rules.order
            found.sort(key=lambda r: order.get(r.namespace, -1))
        return found


__all__ = ["GATE_PREFIX", "Magic", "Piece", "StagedRules", "StagedScanner", "gate_source", "magic_of"]
