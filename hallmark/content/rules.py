"""Loading the rule bundle (secret rules, YARA rules, SHA-256 blocklist) from a data folder.

A bundle is a folder in the layout of the shared data set, so ``hallmark db update`` can
download a newer one and ``load_rules`` reads it unchanged::

    <dir>/secrets/**/*.toml      gitleaks-format secret rules (all files merged)
    <dir>/yara/**/*.yar[a]       YARA rules, one namespace per file
    <dir>/blocklist/*.txt        "<sha256> [name]" lines, '#' comments

Hallmark's own rules (``builtin/``: the EICAR test rule and secret rules gitleaks lacks) are
added unless ``include_builtin=False``. Compiling the YARA set takes seconds, so compiled
rules are cached in memory and, with ``cache_dir``, on disk, keyed by a digest of the rule
texts and the yara-x version: an updated bundle gets a new digest and is compiled again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yara_x

from hallmark.content.secrets import DEFAULT_PATH_ALLOWLIST, SecretRuleSet
from hallmark.content.yara_stages import GATE_PREFIX, Magic, Piece, StagedRules, gate_source, magic_of

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).with_name("builtin")
SECRETS_SUBDIR = "secrets"
YARA_SUBDIR = "yara"
BLOCKLIST_SUBDIR = "blocklist"
YARA_SUFFIXES = (".yar", ".yara")

_lock = threading.Lock()
_yara_cache: dict[str, tuple[StagedRules, tuple[str, ...]]] = {}
_secret_cache: dict[str, SecretRuleSet] = {}


class RulesError(Exception):
    """The rule bundle cannot be loaded (missing folder, unusable secret rules)."""


@dataclass
class RuleBundle:
    """Compiled, ready-to-share rules. Immutable after loading; safe to share across threads."""

    secrets: SecretRuleSet
    yara: StagedRules | None  # YARA rules in two stages (hallmark.content.yara_stages)
    blocklist: dict[str, str]  # sha256 hex -> name
    digest: str  # identifies the bundle content (use it in reports and caches)
    sources: list[str] = field(default_factory=list)  # files the bundle was built from
    warnings: list[str] = field(default_factory=list)  # YARA files that did not compile, bad lines


def _files(root: Path, sub: str, suffixes: tuple[str, ...]) -> list[Path]:
    base = root / sub
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _digest(paths: Iterable[Path], salt: str) -> str:
    h = hashlib.sha256(salt.encode())
    for p in paths:
        h.update(str(p).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _yara_version() -> str:
    try:
        return importlib.metadata.version("yara-x")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vendored build
        return "unknown"


def _namespace(f: Path, roots: Sequence[Path]) -> str:
    return next((str(f.relative_to(r)) for r in roots if f.is_relative_to(r)), f.name)


def _compile_piece(f: Path, namespace: str) -> yara_x.Rules:
    compiler = yara_x.Compiler()
    compiler.new_namespace(namespace)
    compiler.add_source(f.read_text(encoding="utf-8", errors="replace"), origin=str(f))
    return compiler.build()


def _compile_yara(
    files: Sequence[Path], roots: Sequence[Path]
) -> tuple[yara_x.Rules, list[tuple[Magic, yara_x.Rules]], dict[int, yara_x.Rules], tuple[str, ...]]:
    """Compile every file in its own namespace; a file that fails is left out with a warning.
    Files with a first-stage gate (:mod:`hallmark.content.yara_stages`) are compiled alone
    too, and the first stage is split by the magic number its rules need: (first stage for
    every file, [(magic, first stage for files starting with it)], {file index: its full
    rules}, warnings)."""
    compilers: dict[Magic | None, yara_x.Compiler] = {None: yara_x.Compiler()}
    warnings: list[str] = []
    pieces: dict[int, yara_x.Rules] = {}
    for i, f in enumerate(files):
        ns = _namespace(f, roots)
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
            gate = gate_source(text)
            if gate is not None:
                piece = _compile_piece(f, ns)  # a file that fails is left out, gate and all
                compiler = compilers.setdefault(magic_of(gate), yara_x.Compiler())
                try:
                    compiler.new_namespace(f"{GATE_PREFIX}{i}")
                    compiler.add_source(gate, origin=f"gate of {f}")
                    pieces[i] = piece
                    continue
                except yara_x.CompileError as exc:  # kept whole in the first stage
                    log.debug("no gate for %s: %s", f, str(exc).splitlines()[0])
            compiler = compilers.setdefault(magic_of(text), yara_x.Compiler())
            compiler.new_namespace(ns)
            compiler.add_source(text, origin=str(f))
        except (yara_x.CompileError, OSError) as exc:
            warnings.append(f"{f}: left out: {str(exc).splitlines()[0]}")
    front = compilers.pop(None).build()
    guarded = [(magic, c.build()) for magic, c in compilers.items() if magic is not None]
    return front, guarded, pieces, tuple(warnings)


def _read_rules(path: Path) -> yara_x.Rules | None:
    try:
        with path.open("rb") as fh:
            return yara_x.Rules.deserialize_from(fh)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a corrupt or foreign cache file is only a cache miss
        log.warning("ignoring YARA cache %s: %s", path, exc)
        return None


def _write_rules(path: Path, rules: yara_x.Rules) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".yara-")
    try:
        with os.fdopen(fd, "wb") as fh:
            rules.serialize_into(fh)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write YARA cache %s: %s", path, exc)
        Path(tmp).unlink(missing_ok=True)


def _staged(
    front: yara_x.Rules,
    guarded: list[tuple[Magic, yara_x.Rules]],
    files: Sequence[Path],
    roots: Sequence[Path],
    compiled: dict[int, yara_x.Rules],
    cached: Path | None,
) -> StagedRules:
    """The staged set: the full rules behind each gate of ``front`` come from ``compiled``,
    else from the disk cache, else are compiled, when first needed."""
    namespaces = _namespaces(front).union(*(_namespaces(r) for _, r in guarded))
    gates = sorted({int(ns.removeprefix(GATE_PREFIX)) for ns in namespaces if ns.startswith(GATE_PREFIX)})

    def loader(i: int) -> Callable[[], yara_x.Rules]:
        def load() -> yara_x.Rules:
            if i in compiled:
                return compiled.pop(i)
            path = cached.with_name(f"{cached.stem}-{i}.bin") if cached is not None else None
            rules = _read_rules(path) if path is not None else None
            return rules if rules is not None else _compile_piece(files[i], _namespace(files[i], roots))

        return load

    return StagedRules(
        front=front,
        pieces={f"{GATE_PREFIX}{i}": Piece(_namespace(files[i], roots), loader(i)) for i in gates},
        order={_namespace(f, roots): i for i, f in enumerate(files)},
        guarded=guarded,
    )


def _guarded_paths(cached: Path) -> tuple[Path, Callable[[int], Path]]:
    """The list of magic-guarded first stages beside ``cached``, and where the n-th is."""
    return cached.with_suffix(".magic.json"), lambda n: cached.with_suffix(f".m{n}.bin")


def _read_guarded(cached: Path) -> list[tuple[Magic, yara_x.Rules]] | None:
    """The magic-guarded first stages cached beside the main one, or None (then all are compiled again)."""
    listing, at = _guarded_paths(cached)
    try:
        magics = [Magic(int(w), bool(b), int(v)) for w, b, v in json.loads(listing.read_text())]
    except (OSError, ValueError, TypeError) as exc:
        log.warning("ignoring YARA cache %s: %s", listing, exc)
        return None
    out: list[tuple[Magic, yara_x.Rules]] = []
    for n, magic in enumerate(magics):
        rules = _read_rules(at(n))
        if rules is None:
            return None
        out.append((magic, rules))
    return out


def _write_guarded(cached: Path, guarded: list[tuple[Magic, yara_x.Rules]]) -> None:
    listing, at = _guarded_paths(cached)
    for n, (_, rules) in enumerate(guarded):
        _write_rules(at(n), rules)
    listing.parent.mkdir(parents=True, exist_ok=True)
    tmp = listing.with_name(f".{listing.name}.tmp")
    try:
        tmp.write_text(json.dumps([[m.width, m.big, m.value] for m, _ in guarded]))
        os.replace(tmp, listing)
    except OSError as exc:
        log.warning("cannot write YARA cache %s: %s", listing, exc)


def _namespaces(rules: yara_x.Rules) -> set[str]:
    """The namespaces of a compiled set (matching nothing shows them: ask each rule)."""
    return {rule.namespace for rule in rules}


def _load_yara(
    files: Sequence[Path], roots: Sequence[Path], cache_dir: Path | None
) -> tuple[StagedRules, tuple[str, ...]]:
    key = _yara_key(files)
    with _lock:
        if key in _yara_cache:
            return _yara_cache[key]
    cached = cache_dir / f"yara-{key}.bin" if cache_dir else None
    result: tuple[StagedRules, tuple[str, ...]] | None = None
    front = _read_rules(cached) if cached is not None else None
    guarded = _read_guarded(cached) if cached is not None and front is not None else None
    if front is not None and guarded is not None:
        result = (_staged(front, guarded, files, roots, {}, cached), ())
    else:
        front, guarded, pieces, warnings = _compile_yara(files, roots)
        if cached is not None and not warnings:
            for i, piece in pieces.items():  # the pieces first: a front on disk means they are there
                _write_rules(cached.with_name(f"{cached.stem}-{i}.bin"), piece)
            _write_guarded(cached, guarded)
            _write_rules(cached, front)
        result = (_staged(front, guarded, files, roots, pieces, cached), warnings)
    with _lock:
        _yara_cache[key] = result
    return result


def load_blocklist(files: Iterable[Path]) -> tuple[dict[str, str], list[str]]:
    """Parse "<sha256> [name]" lines; bad lines become warnings, not errors."""
    out: dict[str, str] = {}
    warnings: list[str] = []
    for f in files:
        for n, raw in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            digest, _, name = line.partition(" ")
            digest = digest.lower().removeprefix("sha256:")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                warnings.append(f"{f}:{n}: not a SHA-256: {digest[:80]!r}")
                continue
            out[digest] = name.strip() or f.stem
    return out, warnings


def _bundle_files(
    directory: str | os.PathLike[str] | None, include_builtin: bool, yara: bool
) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """(roots, secret files, YARA files, blocklist files) of a bundle, in digest order."""
    roots: list[Path] = []
    if directory is not None:
        root = Path(directory)
        if not root.is_dir():
            raise RulesError(f"rule folder {root} does not exist")
        roots.append(root.resolve())
    if include_builtin:
        roots.append(BUILTIN_DIR.resolve())
    secret_files = [f for r in roots for f in _files(r, SECRETS_SUBDIR, (".toml",))]
    yara_files = [f for r in roots for f in _files(r, YARA_SUBDIR, YARA_SUFFIXES)] if yara else []
    block_files = [f for r in roots for f in _files(r, BLOCKLIST_SUBDIR, (".txt",))]
    return roots, secret_files, yara_files, block_files


def bundle_digest(directory: str | os.PathLike[str] | None, *, include_builtin: bool = True, yara: bool = True) -> str:
    """The ``RuleBundle.digest`` that ``load_rules`` with the same arguments would give, without
    compiling anything: a scan whose layer results are all cached never needs the YARA rules."""
    _, secret_files, yara_files, block_files = _bundle_files(directory, include_builtin, yara)
    return _digest(secret_files + yara_files + block_files, "bundle")


def _yara_key(files: Sequence[Path]) -> str:
    return _digest(files, "yara-x " + _yara_version() + " staged by magic")  # the cache holds first stages


def yara_cached(directory: str | os.PathLike[str] | None, cache_dir: Path, *, include_builtin: bool = True) -> bool:
    """Whether ``load_rules(directory, cache_dir=cache_dir)`` would read compiled YARA rules
    from disk (a set with files that fail to compile is never stored, so it would compile)."""
    _, _, yara_files, _ = _bundle_files(directory, include_builtin, True)
    return not yara_files or (cache_dir / f"yara-{_yara_key(yara_files)}.bin").is_file()


def load_rules(
    directory: str | os.PathLike[str] | None,
    *,
    include_builtin: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    path_allowlist: Sequence[str] = DEFAULT_PATH_ALLOWLIST,
    yara: bool = True,
) -> RuleBundle:
    """Load a rule bundle from ``directory`` (``None``: built-in rules only).

    Raises ``RulesError`` when the folder is missing or a secret rule file is unusable (a
    broken secret rule set would silently hide leaks); YARA files that fail to compile are
    left out and listed in ``warnings`` so one bad upstream rule does not disable malware
    scanning.
    """
    roots, secret_files, yara_files, block_files = _bundle_files(directory, include_builtin, yara)
    if not secret_files:
        log.warning("no secret rules under %s", ", ".join(map(str, roots)))

    skey = _digest(secret_files, "secrets\0" + "\0".join(path_allowlist))
    with _lock:
        secrets = _secret_cache.get(skey)
    if secrets is None:
        try:
            secrets = SecretRuleSet.from_files(secret_files, path_allowlist)
        except ValueError as exc:
            raise RulesError(str(exc)) from exc
        with _lock:
            _secret_cache[skey] = secrets

    warnings: list[str] = []
    compiled: StagedRules | None = None
    if yara_files:
        compiled, ywarn = _load_yara(yara_files, roots, Path(cache_dir) if cache_dir else None)
        warnings.extend(ywarn)
    blocklist, bwarn = load_blocklist(block_files)
    warnings.extend(bwarn)
    all_files = secret_files + yara_files + block_files
    return RuleBundle(
        secrets=secrets,
        yara=compiled,
        blocklist=blocklist,
        digest=_digest(all_files, "bundle"),
        sources=[str(f) for f in all_files],
        warnings=warnings,
    )


def clear_caches() -> None:
    """Forget compiled rules (tests; a long-running server after ``db update`` needs nothing:
    new content means a new digest)."""
    with _lock:
        _yara_cache.clear()
        _secret_cache.clear()
