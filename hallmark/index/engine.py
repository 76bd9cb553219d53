"""Per-layer scanning and cross-layer merging.

A layer is scanned into :class:`LayerFacts` (its tar entries plus what detectors found in
each wanted file), which depends on that layer's bytes alone and so is cached by layer
digest. :func:`merge` then replays the facts of all layers in order on an in-memory tree
(whiteouts, opaque directories, symlinked parent directories such as merged ``/usr``) and
keeps only findings whose file is still in the final filesystem, dating each package to the
earliest layer of the unbroken run of writes that still contained it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from hallmark.index.detect import Detection, Detector
from hallmark.index.limits import ENTRY_OVERHEAD, PACKAGE_OVERHEAD, Budget, IndexFailed, Limits
from hallmark.index.names import display
from hallmark.index.walker import (
    DIR,
    FILE,
    HARDLINK,
    OPAQUE,
    SPARSE,
    SYMLINK,
    WHITEOUT,
    FileTooLarge,
    LayerEntry,
)
from hallmark.model import Distro, Package


@dataclass
class Finding:
    """One detector's result for one file of one layer."""

    detector: str
    packages: list[Package] = field(default_factory=list)
    distro: Distro | None = None
    priority: int = 100


@dataclass
class LayerFacts:
    """Everything the merge needs from one layer; JSON-serialisable for the layer cache."""

    digest: str
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (path, kind, link target)
    findings: dict[str, list[Finding]] = field(default_factory=dict)  # by path in this layer
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``asdict(self)``, without ``asdict``'s deep walk of every entry tuple (a layer has
        thousands; that walk was ~5 % of a first scan)."""
        return {
            "digest": self.digest,
            "entries": [list(e) for e in self.entries],
            "findings": {path: [asdict(f) for f in fs] for path, fs in self.findings.items()},
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerFacts:
        findings = {
            path: [
                Finding(
                    f["detector"],
                    [Package(**p) for p in f["packages"]],
                    Distro(**f["distro"]) if f.get("distro") else None,
                    f["priority"],
                )
                for f in fs
            ]
            for path, fs in d["findings"].items()
        }
        return cls(d["digest"], [tuple(e) for e in d["entries"]], findings, list(d["warnings"]))


def _prefilter(detectors: Sequence[Detector]) -> re.Pattern[str] | None:
    parts = [d._re.pattern for d in detectors if d._re is not None]
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


EntryHook = Callable[[LayerEntry, IO[bytes] | None], None]
MAX_WARNINGS = 1000  # kept per layer: a hostile layer can make a detector warn about every member


class _Prefixed(io.RawIOBase):
    """Bytes already read (a magic-number peek) followed by the rest of the stream."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def charge_entry(budget: Budget | None, path: str, link: str) -> None:
    """Count one kept entry against the image caps and the job's memory."""
    if budget is None:
        return
    lim = budget.limits
    n = len(path) + len(link)
    budget.charge("entries", 1, lim.max_entries_per_image, "entries in all layers")
    budget.charge("path bytes", n, lim.max_path_bytes_per_image, "bytes of entry names in all layers")
    budget.hold(n + ENTRY_OVERHEAD)


def charge_packages(budget: Budget | None, n: int) -> None:
    if budget is None or not n:
        return
    budget.charge("packages", n, budget.limits.max_packages_per_image, "packages in all layers")
    budget.hold(n * PACKAGE_OVERHEAD)


def charge_facts(budget: Budget | None, facts: LayerFacts) -> None:
    """Charge a layer's facts taken from the cache exactly as if the layer had been read."""
    if budget is None:
        return
    for path, _kind, link in facts.entries:
        charge_entry(budget, path, link)
    charge_packages(budget, sum(len(f.packages) for fs in facts.findings.values() for f in fs))


def scan_layer(
    entries: Iterable[LayerEntry],
    digest: str,
    detectors: Sequence[Detector],
    limits: Limits,
    on_entry: EntryHook | None = None,
    budget: Budget | None = None,
    warnings: list[str] | None = None,
) -> LayerFacts:
    """Read one layer's entries, running detectors on the files they want (and only those).

    ``on_entry(entry, stream)`` sees every entry too (``stream`` is None for non-files), so a
    content check can share this single read of the layer instead of decompressing it again.
    ``warnings`` (shared with the walker's ``warn``) are added to the facts; ``budget`` is
    charged for what the facts keep.
    """
    facts = LayerFacts(digest)
    if warnings is not None:
        facts.warnings = warnings
    prefilter = _prefilter(detectors)
    magic_detectors = [d for d in detectors if d.magic]
    for e in entries:
        charge_entry(budget, e.path, e.linkname)
        facts.entries.append((e.path, e.kind, e.linkname))
        if e.kind == SPARSE:
            facts.warnings.append(f"/{display(e.path)}: sparse file not inspected")
        if e.kind == HARDLINK:
            _copy_hardlink_findings(facts, e.path, e.linkname)
        if e.kind != FILE:
            if on_entry is not None:
                on_entry(e, None)
            continue
        wanting = [d for d in detectors if d.wants(e.path)] if prefilter and prefilter.match(e.path) else []
        maybe_binary = bool(magic_detectors) and e.mode & 0o111 and e.size >= 64
        if not wanting and not maybe_binary:
            if on_entry is not None:
                with e.open() as f:
                    on_entry(e, f)
            continue
        try:
            if wanting:
                data = e.read(limits.max_file_bytes)
            else:
                with e.open() as f:
                    head = f.read(4)
                    is_binary = any(head.startswith(m) for d in magic_detectors for m in d.magic)
                    if not is_binary or e.size > limits.max_file_bytes:
                        if is_binary:
                            facts.warnings.append(f"skipped /{e.path}: {e.size} bytes exceeds the per-file limit")
                        if on_entry is not None:
                            on_entry(e, io.BufferedReader(_Prefixed(head, f)))
                        continue
                    data = head + f.read(e.size - 4)
        except FileTooLarge as exc:
            facts.warnings.append(f"skipped {exc}")
            if on_entry is not None:
                with e.open() as f:
                    on_entry(e, f)
            continue
        if on_entry is not None:
            on_entry(e, io.BytesIO(data))
        wanting += [d for d in magic_detectors if d not in wanting and any(data.startswith(m) for m in d.magic)]
        with budget.holding(len(data)) if budget is not None else contextlib.nullcontext():
            for d in wanting:
                _run(d, e.path, data, facts, budget)
    if len(facts.warnings) > MAX_WARNINGS:
        more = len(facts.warnings) - MAX_WARNINGS
        facts.warnings[MAX_WARNINGS:] = [f"... and {more} more warnings for layer {digest}"]
    return facts


def _run(detector: Detector, path: str, data: bytes, facts: LayerFacts, budget: Budget | None = None) -> None:
    try:
        result: Detection | None = detector.detect(path, data)
    except IndexFailed:
        raise  # a cap or the job budget: the image fails, with that reason
    except Exception as exc:  # a detector bug must cost one file, not the image
        facts.warnings.append(f"detector {detector.name} failed on /{display(path)}: {type(exc).__name__}: {exc}")
        return
    if result is None:
        return
    charge_packages(budget, len(result.packages))
    facts.warnings.extend(result.warnings)
    if result.packages or result.distro:
        facts.findings.setdefault(path, []).append(
            Finding(detector.name, result.packages, result.distro, result.priority)
        )


def _copy_hardlink_findings(facts: LayerFacts, path: str, target: str) -> None:
    found = facts.findings.get(target)
    if found:
        facts.findings[path] = copy.deepcopy(found)


class SymlinkLoop(Exception):
    """Too many symlinks while resolving a path (a loop, or a hostile chain)."""


class _Node:
    __slots__ = ("children", "kind", "layer", "path", "target")

    def __init__(self, kind: str, layer: int, path: str, target: str = "") -> None:
        self.kind = kind
        self.layer = layer
        self.path = path
        self.target = target
        self.children: dict[str, _Node] | None = {} if kind == DIR else None


class Tree:
    """The merged image filesystem (metadata only). Symlinks resolve inside it, never outside."""

    def __init__(self, max_hops: int = 40) -> None:
        self.root = _Node(DIR, -1, "")
        self.max_hops = max_hops
        self.on_remove: Callable[[_Node], None] = lambda node: None
        # resolve() of parent folders, memoised: most entries share a parent. Any change to a
        # path that some cached resolution walked through (``_walked``) drops the memo.
        self._parents: dict[str, str] = {}
        self._walked: set[str] = set()

    def _forget(self) -> None:
        if self._parents:
            self._parents.clear()
            self._walked.clear()

    def resolve_parent(self, path: str) -> str:
        hit = self._parents.get(path)
        if hit is None:
            hit = self.resolve(path)
            self._parents[path] = hit
            for p in (path, hit):
                while p and p not in self._walked:
                    self._walked.add(p)
                    p = p.rpartition("/")[0]
        return hit

    def lookup(self, path: str) -> _Node | None:
        node: _Node | None = self.root
        for c in path.split("/") if path else []:
            if node is None or node.children is None:
                return None
            node = node.children.get(c)
        return node

    def resolve(self, path: str, follow_last: bool = True) -> str:
        """Resolve symlinks in ``path`` like the kernel would inside a chroot (``..`` stops at /)."""
        todo = [c for c in path.split("/") if c and c != "."][::-1]
        cur: list[str] = []
        node: _Node | None = self.root
        hops = 0
        while todo:
            c = todo.pop()
            if c == "..":
                if cur:
                    cur.pop()
                node = self.lookup("/".join(cur))
                continue
            if c == ".":
                continue
            child = node.children.get(c) if node is not None and node.children is not None else None
            if child is not None and child.kind == SYMLINK and (todo or follow_last):
                hops += 1
                if hops > self.max_hops:
                    raise SymlinkLoop(f"symlink loop (over {self.max_hops} hops) resolving /{path}")
                if child.target.startswith("/"):
                    cur, node = [], self.root
                todo.extend(p for p in reversed(child.target.split("/")) if p)
                continue
            cur.append(c)
            node = child
        return "/".join(cur)

    def _dir(self, path: str, layer: int) -> _Node:
        node = self.root
        for i, c in enumerate(path.split("/") if path else []):
            assert node.children is not None
            child = node.children.get(c)
            if child is None or child.children is None:
                if child is not None:
                    self._removed(child)
                child = _Node(DIR, layer, "/".join(path.split("/")[: i + 1]))
                node.children[c] = child
            node = child
        return node

    def _removed(self, node: _Node) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            self.on_remove(n)
            if n.children:
                stack.extend(n.children.values())

    def remove(self, path: str) -> None:
        self._forget()
        parent = self.lookup(self.resolve(posixpath.dirname(path)))
        if parent is not None and parent.children is not None:
            gone = parent.children.pop(posixpath.basename(path), None)
            if gone is not None:
                self._removed(gone)

    def clear_dir(self, path: str) -> None:
        self._forget()
        node = self.lookup(self.resolve(path))
        if node is not None and node.children:
            for child in node.children.values():
                self._removed(child)
            node.children = {}

    def add(self, path: str, kind: str, layer: int, target: str = "") -> _Node:
        parent_path = self.resolve_parent(path.rpartition("/")[0])
        parent = self._dir(parent_path, layer)
        name = path.rpartition("/")[2]
        full = f"{parent_path}/{name}" if parent_path else name
        assert parent.children is not None
        existing = parent.children.get(name)
        if kind == DIR and existing is not None and existing.kind == DIR:
            existing.layer = layer
            return existing
        if full in self._walked or path in self._walked:
            self._forget()  # a folder some cached resolution went through is replaced
        if existing is not None and existing.children:  # same path rewritten: only its subtree is gone
            for child in existing.children.values():
                self._removed(child)
        node = _Node(kind, layer, full, target)
        parent.children[name] = node
        return node


@dataclass
class MergeResult:
    packages: list[Package]
    distro: Distro | None
    warnings: list[str]


def _key(detector: str, p: Package) -> tuple[str, ...]:
    return (detector, p.ecosystem, p.name, p.version, p.purl or "", "|".join(p.paths))


def merge(
    layers: Sequence[LayerFacts], detectors: Sequence[Detector], limits: Limits, budget: Budget | None = None
) -> MergeResult:
    """Replay layers on a tree, keep findings of files still present, date and aggregate packages."""
    tree = Tree(limits.max_symlink_hops)
    warnings: list[str] = []
    # resolved path -> history of writes: (layer, raw path, node) or None for a deletion
    writes: dict[str, list[tuple[int, str, _Node] | None]] = {}

    def deleted(node: _Node) -> None:
        if node.path in writes:
            writes[node.path].append(None)

    tree.on_remove = deleted
    for li, facts in enumerate(layers):
        warnings.extend(facts.warnings)
        for path, kind, _target in facts.entries:  # deletions apply to lower layers only: first
            try:
                if kind == OPAQUE:
                    tree.clear_dir(path)
                elif kind == WHITEOUT:
                    tree.remove(path)
            except SymlinkLoop as exc:
                warnings.append(f"layer {li}: whiteout of /{path} skipped: {exc}")
        for n, (path, kind, target) in enumerate(facts.entries):
            if budget is not None and n % 4096 == 0:
                budget.check_time()
            if kind in (OPAQUE, WHITEOUT) or not path:
                continue
            try:
                node = tree.add(path, kind, li, target)
            except SymlinkLoop as exc:
                warnings.append(f"layer {li}: /{path} skipped: {exc}")
                continue
            if node.path in writes or path in facts.findings:
                writes.setdefault(node.path, []).append((li, path, node))

    surviving: dict[str, tuple[int, list[Finding], str]] = {}  # resolved path -> (layer, findings, raw)
    intro: dict[tuple[str, ...], int] = {}
    keysets: dict[tuple[int, str], set[tuple[str, ...]]] = {}

    def keys_of(li: int, raw: str) -> set[tuple[str, ...]]:
        """Package keys one layer found in one file, built once (a set: the lookups stay linear)."""
        ks = keysets.get((li, raw))
        if ks is None:
            ks = {_key(g.detector, q) for g in layers[li].findings.get(raw, []) for q in g.packages}
            keysets[(li, raw)] = ks
        return ks

    for rpath, hist in writes.items():
        last = hist[-1]
        if last is None:
            continue
        li, raw, node = last
        if tree.lookup(rpath) is not node or raw not in layers[li].findings:
            continue
        found = layers[li].findings[raw]
        surviving[rpath] = (li, found, raw)
        for f in found:
            for p in f.packages:
                k = _key(f.detector, p)
                first = li
                for prev in reversed(hist[:-1]):
                    if prev is None or k not in keys_of(prev[0], prev[1]):
                        break
                    first = prev[0]
                intro[(rpath, *k)] = first

    distro = _pick_distro(tree, surviving, warnings)
    by_name = {d.name: d for d in detectors}
    merged: dict[tuple[str, ...], Package] = {}
    for rpath, (_li, found, raw) in sorted(surviving.items()):
        for f in found:
            for p in f.packages:
                first = intro[(rpath, *_key(f.detector, p))]
                pkg = copy.deepcopy(p)
                pkg.paths = _rebase(p.paths, raw, rpath)
                pkg.layer = layers[first].digest
                agg_key = (f.detector, pkg.ecosystem, pkg.name, pkg.version, pkg.purl or "")
                have = merged.get(agg_key)
                if have is None:
                    pkg.extra.setdefault("detector", f.detector)
                    merged[agg_key] = pkg
                    pkg.extra["_layer_index"] = first
                    continue
                have.paths = sorted(set(have.paths) | set(pkg.paths))
                have.licenses = have.licenses or pkg.licenses
                if first < have.extra["_layer_index"]:
                    have.extra["_layer_index"], have.layer = first, pkg.layer
    packages = []
    for (det, *_), pkg in merged.items():
        pkg.extra.pop("_layer_index", None)
        d = by_name.get(det)
        if d is not None:
            d.finalize(pkg, distro)
        packages.append(pkg)
    packages.sort(key=lambda p: (p.ecosystem, p.name, p.version, p.paths))
    return MergeResult(packages, distro, warnings)


def _rebase(paths: list[str], raw: str, resolved: str) -> list[str]:
    out = []
    raw_dir, res_dir = posixpath.dirname(raw), posixpath.dirname(resolved)
    for p in paths or [""]:
        if p == "" or p.startswith(":"):
            out.append("/" + resolved + p)
        elif p == raw_dir or p.startswith(raw_dir + "/"):
            out.append("/" + (res_dir + p[len(raw_dir) :]).lstrip("/"))
        else:
            out.append("/" + p.lstrip("/"))
    return sorted(set(out))


def _pick_distro(
    tree: Tree, surviving: dict[str, tuple[int, list[Finding], str]], warnings: list[str]
) -> Distro | None:
    """/etc/os-release (following symlinks inside the image) wins, then detector priorities."""
    best: tuple[int, Distro] | None = None
    try:
        target = tree.resolve("etc/os-release")
    except SymlinkLoop as exc:
        warnings.append(str(exc))
        target = ""
    for rpath, (_li, found, _raw) in surviving.items():
        for f in found:
            if f.distro is None:
                continue
            prio = -1 if rpath == target else f.priority
            if best is None or prio < best[0]:
                best = (prio, f.distro)
    return best[1] if best else None


def iter_all(facts: Iterable[LayerFacts]) -> Iterator[Package]:
    """Every package any layer saw, ignoring deletions (for debugging and tests)."""
    for lf in facts:
        for fs in lf.findings.values():
            for f in fs:
                yield from f.packages
