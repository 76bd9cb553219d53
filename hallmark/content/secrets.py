"""Secret detection with gitleaks rule files, evaluated by RE2.

gitleaks' rules are the best-maintained open rule set, but gitleaks itself is a Go binary and
no Python library evaluates its TOML format, so the evaluation below is written by hand. It
follows gitleaks' ``detect`` order (global path allowlist, keyword prefilter, rule path,
regex, secret group, entropy, global then rule allowlists, ``gitleaks:allow``) as documented
in the rule bundle's README. Regexes are Go RE2 syntax, so they run on ``google-re2``
unchanged, which also gives linear-time matching on untrusted layer content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2

from hallmark.content.config_checks import is_sensitive
from hallmark.content.model import Finding, Severity

# Rules that match any "key = value" shape; a specific rule that found the same secret wins.
GENERIC_RULE_PREFIX = "generic"
INLINE_ALLOW = "gitleaks:allow"
PREVIEW_CONTEXT = 32  # characters of the line kept on each side of the masked secret

# Severity by rule id; everything else is "high" (a working credential is rarely less).
_SEVERITY_OVERRIDES: dict[str, Severity] = {
    "generic-api-key": "medium",
    "pkcs12-file": "medium",
    "jwt": "medium",
    "jwt-base64": "medium",
}
_CRITICAL_PREFIXES = ("aws-", "gcp-", "azure-", "private-key", "github-", "gitlab-", "database-url")


class RuleFileError(ValueError):
    """A secret rule file cannot be used; the message names the file and rule."""


@dataclass(frozen=True, slots=True)
class Allowlist:
    """One gitleaks allowlist block (``[allowlist]``, ``[[allowlists]]``, ``[[rules.allowlists]]``)."""

    paths: tuple[Any, ...] = ()
    regexes: tuple[Any, ...] = ()
    regex_target: str = "secret"  # "secret" | "match" | "line"
    stopwords: tuple[Any, ...] = ()  # one compiled alternation of the lower-cased stopwords
    condition_and: bool = False

    def path_matches(self, path: str) -> bool:
        return any(p.search(path) for p in self.paths)

    def allows(self, path: str, secret: str, match: str, line: str) -> bool:
        """True when this block suppresses the candidate (OR of its checks, or AND)."""
        checks: list[bool] = []
        if self.paths:
            checks.append(self.path_matches(path))
        if self.regexes:
            target = {"match": match, "line": line}.get(self.regex_target, secret)
            checks.append(any(r.search(target) for r in self.regexes))
        if self.stopwords:
            low = secret.lower()
            checks.append(any(w.search(low) for w in self.stopwords))
        if not checks:
            return False
        return all(checks) if self.condition_and else any(checks)


@dataclass(frozen=True, slots=True)
class SecretRule:
    id: str
    description: str
    regex: Any | None  # compiled re2 pattern
    keywords: tuple[str, ...] = ()
    entropy: float | None = None
    path: Any | None = None
    secret_group: int | None = None
    allowlists: tuple[Allowlist, ...] = ()
    severity: Severity = "high"


@dataclass(frozen=True, slots=True)
class SecretMatch:
    """A detected secret before it becomes a ``Finding``; ``secret`` never leaves this module."""

    rule: SecretRule
    secret: str
    start: int  # offset of the secret in the text
    end: int
    line: int  # 1-based


def _compile(pattern: str, where: str) -> Any:
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise RuleFileError(f"{where}: bad regex {pattern!r}: {exc}") from exc


def _allowlist(raw: dict[str, Any], where: str) -> Allowlist:
    target = str(raw.get("regexTarget", "secret")).lower()
    if target not in {"secret", "match", "line"}:
        raise RuleFileError(f"{where}: unknown regexTarget {target!r}")
    stopwords = [str(w).lower() for w in raw.get("stopwords", [])]
    return Allowlist(
        paths=_combined(raw.get("paths", []), where),
        regexes=_combined(raw.get("regexes", []), where),
        regex_target=target,
        # one RE2 pass over the secret instead of ~1,400 substring tests per candidate
        stopwords=(re2.compile("|".join(re2.escape(w) for w in stopwords)),) if stopwords else (),
        condition_and=str(raw.get("condition", "OR")).upper() == "AND",
    )


def _combined(patterns: Sequence[str], where: str) -> tuple[Any, ...]:
    """Compile each pattern (to name the bad one), then join them into one RE2 alternation so
    an allowlist costs one search, not one per pattern; fall back to the list if joining fails."""
    compiled = tuple(_compile(p, where) for p in patterns)
    if len(compiled) < 2:
        return compiled
    try:
        return (re2.compile("|".join(f"(?:{p})" for p in patterns)),)
    except re2.error:
        return compiled


def _severity_for(rule_id: str) -> Severity:
    if rule_id in _SEVERITY_OVERRIDES:
        return _SEVERITY_OVERRIDES[rule_id]
    if rule_id.startswith(_CRITICAL_PREFIXES):
        return "critical"
    return "high"


def parse_gitleaks_config(
    data: dict[str, Any], origin: str
) -> tuple[list[SecretRule], list[Allowlist], dict[str, list[Allowlist]]]:
    """Turn a parsed gitleaks TOML document into rules, global allowlists and allowlists that
    target named rules (gitleaks 8.25 ``[[allowlists]] targetRules = [...]``)."""
    globals_: list[Allowlist] = []
    targeted: dict[str, list[Allowlist]] = {}
    if isinstance(data.get("allowlist"), dict):
        globals_.append(_allowlist(data["allowlist"], f"{origin} [allowlist]"))
    for i, block in enumerate(data.get("allowlists", []) or []):
        allow = _allowlist(block, f"{origin} [[allowlists]] #{i}")
        if block.get("targetRules"):
            for rid in block["targetRules"]:
                targeted.setdefault(str(rid), []).append(allow)
        else:
            globals_.append(allow)
    rules: list[SecretRule] = []
    for raw in data.get("rules", []):
        rid = str(raw.get("id", "")).strip()
        where = f"{origin} rule {rid or '?'}"
        if not rid:
            raise RuleFileError(f"{where}: rule without id")
        if "regex" not in raw and "path" not in raw:
            raise RuleFileError(f"{where}: rule has neither regex nor path")
        blocks = list(raw.get("allowlists", []) or [])
        if isinstance(raw.get("allowlist"), dict):  # pre-8.21 spelling
            blocks.append(raw["allowlist"])
        sg = raw.get("secretGroup")
        rules.append(
            SecretRule(
                id=rid,
                description=str(raw.get("description", rid)),
                regex=_compile(raw["regex"], where) if raw.get("regex") else None,
                keywords=tuple(str(k).lower() for k in raw.get("keywords", [])),
                entropy=float(raw["entropy"]) if raw.get("entropy") is not None else None,
                path=_compile(raw["path"], where) if raw.get("path") else None,
                secret_group=int(sg) if sg else None,
                allowlists=tuple(_allowlist(b, f"{where} allowlist") for b in blocks),
                severity=_severity_for(rid),
            )
        )
    return rules, globals_, targeted


def shannon_entropy(text: str) -> float:
    """Bits per character, as gitleaks computes it for its ``entropy`` thresholds."""
    if not text:
        return 0.0
    n = len(text)
    return -sum((c / n) * math.log2(c / n) for c in Counter(text).values())


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _mask(secret: str) -> str:
    """Keep at most 4 leading characters of long secrets (enough to tell key types apart)."""
    keep = 4 if len(secret) >= 20 else 0
    return secret[:keep] + "*" * 8


@dataclass
class SecretRuleSet:
    """Compiled gitleaks rules plus a keyword prefilter built as one RE2 set."""

    rules: list[SecretRule]
    global_allowlists: list[Allowlist]
    path_allowlist: tuple[Any, ...] = ()  # Hallmark's own known-false-positive paths
    _kw_set: Any = field(init=False, repr=False, default=None)
    _kw_rules: list[list[SecretRule]] = field(init=False, repr=False, default_factory=list)
    _always: list[SecretRule] = field(init=False, repr=False, default_factory=list)
    _path_only: list[SecretRule] = field(init=False, repr=False, default_factory=list)
    _skip: Any = field(init=False, repr=False, default=None)  # every path that ``path_skipped``, as one RE2 set

    def __post_init__(self) -> None:
        # One RE2 set for every skipped path: one call per file instead of one search per pattern
        # (~12 patterns), and a set answers in one C call where a search goes through the binding's
        # Python match loop (~10 us per path, 10,000 paths per image).
        skip = [p.pattern for p in self.path_allowlist]
        skip += [p.pattern for a in self.global_allowlists if a.paths and not a.condition_and for p in a.paths]
        if skip:
            try:
                self._skip = re2.Set.SearchSet()
                for pattern in skip:
                    self._skip.Add(pattern)
                self._skip.Compile()
            except re2.error:  # never seen: then ask the patterns one by one
                self._skip = None
        keywords: dict[str, list[SecretRule]] = {}
        for rule in self.rules:
            if rule.regex is None:
                self._path_only.append(rule)
            elif not rule.keywords:
                self._always.append(rule)
            else:
                for kw in rule.keywords:
                    keywords.setdefault(kw, []).append(rule)
        # One linear pass finds every keyword present, instead of one substring scan per keyword.
        self._kw_set = re2.Set.SearchSet()
        self._kw_rules = []
        for kw, kw_rules in keywords.items():
            self._kw_set.Add(re2.escape(kw))
            self._kw_rules.append(kw_rules)
        if keywords:
            self._kw_set.Compile()

    @classmethod
    def from_files(cls, files: Iterable[Path], path_allowlist: Sequence[str] = ()) -> SecretRuleSet:
        rules: list[SecretRule] = []
        allow: list[Allowlist] = []
        targeted: dict[str, list[Allowlist]] = {}
        seen: dict[str, int] = {}
        for f in files:
            try:
                data = tomllib.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise RuleFileError(f"{f}: {exc}") from exc
            r, a, t = parse_gitleaks_config(data, str(f))
            for rid, blocks in t.items():
                targeted.setdefault(rid, []).extend(blocks)
            for rule in r:  # a later file redefines a rule with the same id
                if rule.id in seen:
                    rules[seen[rule.id]] = rule
                else:
                    seen[rule.id] = len(rules)
                    rules.append(rule)
            allow.extend(a)
        rules = [
            dataclasses.replace(r, allowlists=r.allowlists + tuple(targeted[r.id])) if r.id in targeted else r
            for r in rules
        ]
        return cls(rules, allow, tuple(_compile(p, "path allowlist") for p in path_allowlist))

    def path_skipped(self, path: str) -> bool:
        """Files the global allowlists or Hallmark's known-false-positive paths exclude."""
        if self._skip is not None:
            return self._skip.Match(path) is not None
        if any(p.search(path) for p in self.path_allowlist):
            return True
        return any(a.paths and not a.condition_and and a.path_matches(path) for a in self.global_allowlists)

    def _candidate_rules(self, text: str | bytes) -> list[SecretRule]:
        chosen: dict[str, SecretRule] = {r.id: r for r in self._always}
        if self._kw_rules:
            for idx in self._kw_set.Match(text.lower()) or ():
                for rule in self._kw_rules[idx]:
                    chosen.setdefault(rule.id, rule)
        return list(chosen.values())

    def path_rules(self, path: str) -> list[SecretRule]:
        """Rules that flag a file by its name alone (e.g. ``*.p12``)."""
        return [r for r in self._path_only if r.path is not None and r.path.search(path)]

    def find(self, text: str | bytes, path: str) -> list[SecretMatch]:
        """All secrets in ``text`` (the whole file, or one config value) at ``path``.

        ``text`` may also be the file's bytes when they are all ASCII: offsets are then the
        same, and RE2 reads them as they are. Given a ``str``, the RE2 binding encodes it to
        UTF-8 again for every rule it runs and maps each offset back; on ASCII bytes nothing is
        decoded unless something matches."""
        out: list[SecretMatch] = []
        decoded = text if isinstance(text, str) else None
        for rule in self._candidate_rules(text):
            if rule.regex is None or (rule.path is not None and not rule.path.search(path)):
                continue
            for m in rule.regex.finditer(text):
                span = self._secret_span(rule, m)
                if span is None:
                    continue
                if decoded is None:
                    decoded = text if isinstance(text, str) else text.decode("ascii")
                s, e = span
                secret = decoded[s:e]
                if rule.entropy is not None and shannon_entropy(secret) <= rule.entropy:
                    continue
                ls = decoded.rfind("\n", 0, s) + 1
                le = decoded.find("\n", e)
                line_text = decoded[ls : le if le >= 0 else len(decoded)]
                if INLINE_ALLOW in line_text:
                    continue
                match_text = decoded[m.start() : m.end()]
                if any(a.allows(path, secret, match_text, line_text) for a in self.global_allowlists):
                    continue
                if any(a.allows(path, secret, match_text, line_text) for a in rule.allowlists):
                    continue
                line_no = decoded.count("\n", 0, s) + 1  # matches are few; no index of the whole file
                out.append(SecretMatch(rule, secret, s, e, line_no))
        return _drop_generic_duplicates(out)

    @staticmethod
    def _secret_span(rule: SecretRule, m: Any) -> tuple[int, int] | None:
        """Where the secret is in a match: the rule's secret group, else the first group that
        matched something, else the whole match; None when that is empty."""
        groups = m.re.groups
        if rule.secret_group and rule.secret_group <= groups:
            g = rule.secret_group
        else:
            g = next((i for i in range(1, groups + 1) if m.end(i) > m.start(i)), 0)
        s, e = m.span(g)
        return (s, e) if e > s else None


def _drop_generic_duplicates(matches: list[SecretMatch]) -> list[SecretMatch]:
    """Drop a generic-rule hit whose secret overlaps a specific rule's hit (gitleaks does too)."""
    specific = [m for m in matches if not m.rule.id.startswith(GENERIC_RULE_PREFIX)]
    kept = list(specific)
    for m in matches:
        if m.rule.id.startswith(GENERIC_RULE_PREFIX) and not any(m.start < s.end and s.start < m.end for s in specific):
            kept.append(m)
    kept.sort(key=lambda m: (m.start, m.rule.id))
    return kept


_ASSIGNMENT = re.compile(r"""([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*[=:][ \t]*("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s,;'"]+)""")


def sensitive_value_spans(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """Values of ``password=...``-style assignments in ``text[lo:hi]``: masked in previews too,
    so the context around one finding never shows a credential no rule matched."""
    spans = []
    for m in _ASSIGNMENT.finditer(text, lo, hi):
        if is_sensitive(m.group(1), m.group(2).strip("\"'")):
            spans.append((m.start(2), m.end(2)))
    return spans


def redacted_preview(text: str, match: SecretMatch, all_matches: Sequence[SecretMatch]) -> str:
    """The line around ``match`` with every detected secret on it masked, shortened to context."""
    ls = text.rfind("\n", 0, match.start) + 1
    le = text.find("\n", match.start)
    le = len(text) if le < 0 else le
    # Mask every secret that touches this window, so a neighbour never leaks through.
    lo = max(ls, match.start - PREVIEW_CONTEXT)
    hi = min(le, match.end + PREVIEW_CONTEXT)
    # (assignments are looked for near the window only: a minified file can be one huge line)
    nearby = sensitive_value_spans(text, max(ls, lo - 256), min(le, hi + 256))
    spans = sorted([(m.start, m.end) for m in all_matches if m.start < le and m.end > ls] + nearby)
    pieces: list[str] = []
    pos = lo
    for s, e in spans:
        if e <= pos:
            continue
        if s > hi:
            break
        if s > pos:
            pieces.append(text[pos:s])
        secret = text[s:e]
        pieces.append(_mask(secret.splitlines()[0] if secret else secret))
        pos = max(pos, e)
    if pos < hi:
        pieces.append(text[pos:hi])
    preview = "".join(pieces).replace("\r", "").replace("\n", " ").replace("\t", " ")
    return ("…" if lo > ls else "") + preview.strip() + ("…" if hi < le else "")


def to_findings(
    text: str,
    matches: Sequence[SecretMatch],
    *,
    path: str | None,
    layer_index: int | None,
    layer_digest: str | None,
    location: str | None = None,
) -> list[Finding]:
    """Build ``Finding`` objects; the secret itself stays behind (fingerprint + masked preview)."""
    return [
        Finding(
            kind="secret",
            rule_id=m.rule.id,
            severity=m.rule.severity,
            title=m.rule.description,
            engine="gitleaks",
            path=path,
            layer_index=layer_index,
            layer_digest=layer_digest,
            location=location,
            line=m.line,
            preview=redacted_preview(text, m, matches),
            fingerprint=fingerprint(m.secret),
            remediation="Revoke and rotate the credential, then rebuild the image without it; deleting "
            "it in a later layer does not remove it from the image.",
        )
        for m in matches
    ]


# Paths in images that hold other projects' test keys, sample configs and certificates:
# reporting them buries real leaks. Anchored to package-managed trees so /app/... and /etc/...
# (where an image's own secrets live) are still scanned. Overridable per scanner.
DEFAULT_PATH_ALLOWLIST: tuple[str, ...] = (
    r"^/usr/(?:local/)?(?:lib|lib64|libexec|share|include)/.*/(?:tests?|testdata|test-data|testing|"
    r"fixtures?|__tests__|spec|examples?|samples?|demos?)/",
    r"^/usr/share/(?:doc|man|info|licenses|common-licenses|locale|i18n|zoneinfo|mime|help|gtk-doc)/",
    r"^/usr/(?:local/)?include/",
    r"^/usr/local/go/(?:src|test|misc|api|doc)/",
    r"(?:^|/)go/pkg/mod/",
    r"(?:^|/)\.cargo/registry/",
    r"(?:^|/)gems/[^/]+/(?:test|spec|examples?)/",
    r"(?:^|/)\.m2/repository/",
    r"^/etc/ssl/certs/",
    r"^/usr/share/ca-certificates/",
    r"^/etc/pki/(?:ca-trust|tls/certs)/",
)
