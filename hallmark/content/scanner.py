"""Per-file and per-config entry points that the layer walker calls.

``ContentScanner.scan_file`` gets one regular file of one layer and runs, within fixed byte
limits: the SHA-256 blocklist (whole file, streamed), YARA and ClamAV (files up to
``max_file_bytes`` held in memory, because YARA conditions address the whole file), the
members of zip/jar/war archives (recursively, bomb-guarded) and the secret rules (text files
up to ``max_secret_bytes``). Anything not scanned is returned as a ``Skip`` with a reason;
no input makes it raise.

A ``ContentScanner`` holds one YARA scanner and is not thread-safe: make one per worker
thread over a shared ``RuleBundle`` (the compiled rules are shared and read-only).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from dataclasses import dataclass, field, replace
from typing import IO, Any

import yara_x

from hallmark.content import config_checks
from hallmark.content.archives import ArchiveBudget, ArchiveLimits, Member, is_zip, iter_zip
from hallmark.content.clamd import ClamdClient, ClamdConfig, ClamdError
from hallmark.content.model import SEVERITY_ORDER, Finding, ScanOutcome, Severity, Skip
from hallmark.content.rules import RuleBundle
from hallmark.content.secrets import to_findings
from hallmark.content.yara_stages import StagedScanner
from hallmark.index.names import display

log = logging.getLogger(__name__)

MiB = 1024 * 1024
BINARY_SNIFF = 8000  # git's heuristic: a NUL byte in the first 8000 bytes means binary
_CATEGORY_SEVERITY: dict[str, Severity] = {"MALWARE": "critical", "EXPLOIT": "high", "INFO": "medium"}


@dataclass(frozen=True)
class ScanOptions:
    """Which scanners run and the byte limits that keep every read bounded."""

    secrets: bool = True
    malware: bool = True
    config: bool = True  # file-mode checks here; ``scan_config`` always runs its checks
    max_file_bytes: int = 64 * MiB  # held in memory for YARA, ClamAV and archives
    max_secret_bytes: int = 10 * MiB  # decoded as text for the secret rules
    max_hash_bytes: int = 1024 * MiB  # streamed through SHA-256 for the blocklist
    read_chunk: int = 1 * MiB
    yara_timeout_seconds: int = 60
    archives: ArchiveLimits = field(default_factory=ArchiveLimits)
    clamd: ClamdConfig | None = None
    record_binary_skips: bool = True  # one Skip("binary") per binary file; off for terse reports


def utf8_clean(text: str) -> str:
    """Replace lone surrogates (``tarfile`` names, JSON ``\\ud800``) that RE2 cannot encode."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def normalize_path(path: str) -> str:
    """Layer paths as reported: absolute, no ``./``, no duplicate slashes, valid UTF-8 (bytes that
    are not UTF-8 shown as ``\\xNN``, as in SBOMs, so two names never collapse into one).
    A path that is already so is returned as it is (each file's path is asked 3-4 times)."""
    if path.isascii() and "//" not in path and "/." not in path and path[-1:] not in ("/", "") and path[0] != ".":
        return path if path[0] == "/" else "/" + path
    path = display(path)
    while path.startswith("./"):
        path = path[2:]
    return posixpath.normpath("/" + path.lstrip("/"))


class ContentScanner:
    def __init__(self, rules: RuleBundle, options: ScanOptions | None = None) -> None:
        self.rules = rules
        self.options = options or ScanOptions()
        self._yara: StagedScanner | None = None
        if rules.yara is not None and self.options.malware:
            self._yara = rules.yara.scanner(self.options.yara_timeout_seconds)
        self._clamd = ClamdClient(self.options.clamd) if self.options.clamd else None

    # ----------------------------------------------------------------- files
    def scan_file(
        self,
        path: str,
        layer_index: int | None,
        layer_digest: str | None,
        data: bytes | IO[bytes],
        size: int | None = None,
        *,
        mode: int | None = None,
    ) -> ScanOutcome:
        """Scan one regular file of a layer. ``data`` is its bytes or a reader positioned at the
        start; ``size`` the tar header size (reads never go past the limits either way);
        ``mode`` the tar header mode bits, for the setuid/setgid/world-writable checks."""
        path = normalize_path(path)
        out = ScanOutcome()
        if mode is not None and self.options.config:
            out.findings.extend(config_checks.check_mode(path, layer_index, layer_digest, mode))
        try:
            self._scan_file(path, layer_index, layer_digest, data, size, out)
        except Exception as exc:  # last line of defence: one odd file never stops an image scan
            log.exception("content scan of %s failed", path)
            out.skipped.append(Skip(path, layer_index, "all", "internal-error", f"{type(exc).__name__}: {exc}"))
        return out

    def scan_metadata(
        self, path: str, layer_index: int | None, layer_digest: str | None, mode: int, *, is_dir: bool
    ) -> list[Finding]:
        """Mode checks for entries that have no content to scan (directories)."""
        if not self.options.config:
            return []
        return config_checks.check_mode(normalize_path(path), layer_index, layer_digest, mode, is_dir=is_dir)

    def _read(
        self, data: bytes | IO[bytes], size: int | None, path: str, layer: int | None, out: ScanOutcome
    ) -> tuple[bytes | None, str | None]:
        """Return (contents if within ``max_file_bytes``, sha256 if within ``max_hash_bytes``)."""
        opts = self.options
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
            if len(raw) > opts.max_hash_bytes:
                out.skipped.append(Skip(path, layer, "all", "too-large", f"{len(raw)} bytes > {opts.max_hash_bytes}"))
                return None, None
            if len(raw) <= opts.max_file_bytes:
                return raw, ""  # hashed only if something needs it (``_sha``)
            return None, hashlib.sha256(raw).hexdigest()
        if size is not None and size > opts.max_hash_bytes:
            out.skipped.append(Skip(path, layer, "all", "too-large", f"{size} bytes > {opts.max_hash_bytes}"))
            return None, None
        h = hashlib.sha256()
        buf: bytearray | None = bytearray()
        total = 0
        try:
            while True:
                want = min(opts.read_chunk, opts.max_hash_bytes + 1 - total)
                if want <= 0:
                    out.skipped.append(Skip(path, layer, "all", "too-large", f"more than {opts.max_hash_bytes} bytes"))
                    return None, None
                chunk = data.read(want)
                if not chunk:
                    break
                total += len(chunk)
                h.update(chunk)
                if buf is not None:
                    if total > opts.max_file_bytes:
                        buf = None  # keep hashing, stop holding
                    else:
                        buf += chunk
        except (OSError, ValueError, EOFError) as exc:
            out.skipped.append(Skip(path, layer, "all", "read-error", f"{type(exc).__name__}: {exc}"))
            return None, None
        return (bytes(buf) if buf is not None else None), h.hexdigest()

    def _scan_file(
        self,
        path: str,
        layer: int | None,
        digest: str | None,
        data: bytes | IO[bytes],
        size: int | None,
        out: ScanOutcome,
    ) -> None:
        content, sha = self._read(data, size, path, layer, out)
        if sha is None and content is None:
            return
        if content is not None and not sha:
            sha = self._sha(content)
        if sha is not None and self.options.malware:
            self._blocklist(path, layer, digest, sha, out)
        secrets_skipped = not self.options.secrets or self.rules.secrets.path_skipped(path)  # asked once per file
        if not secrets_skipped:
            for rule in self.rules.secrets.path_rules(path):
                out.findings.append(
                    Finding(
                        kind="secret",
                        rule_id=rule.id,
                        severity=rule.severity,
                        title=rule.description,
                        engine="gitleaks",
                        path=path,
                        layer_index=layer,
                        layer_digest=digest,
                        preview="file detected",
                        fingerprint=sha or hashlib.sha256(content or b"").hexdigest(),
                        remediation="Remove the key store from the image and rotate the keys it holds.",
                    )
                )
        if content is None:
            out.skipped.append(
                Skip(
                    path,
                    layer,
                    "malware+secret",
                    "too-large",
                    f"larger than {self.options.max_file_bytes} bytes; only hashed",
                )
            )
            return
        if self.options.malware:
            self._yara_scan(path, layer, digest, content, sha, out)
            self._clamav(path, layer, digest, content, out)
        budget = ArchiveBudget(self.options.archives)
        self._content(path, layer, digest, content, out, depth=0, budget=budget, path_skipped=secrets_skipped)

    def _content(
        self,
        path: str,
        layer: int | None,
        digest: str | None,
        content: bytes,
        out: ScanOutcome,
        *,
        depth: int,
        budget: ArchiveBudget,
        path_skipped: bool | None = None,
    ) -> None:
        """Archive members and secrets; called for the file itself and for each archive member.
        ``path_skipped``: the secret rules' path allowlist already asked for ``path`` (None: ask)."""
        if is_zip(content):
            self._archive(path, layer, digest, content, out, depth=depth, budget=budget)
            return
        if self.options.secrets:
            self._secrets(path, layer, digest, content, out, path_skipped)

    def _archive(
        self,
        path: str,
        layer: int | None,
        digest: str | None,
        content: bytes,
        out: ScanOutcome,
        *,
        depth: int,
        budget: ArchiveBudget,
    ) -> None:
        if depth >= self.options.archives.max_depth:
            out.skipped.append(
                Skip(
                    path,
                    layer,
                    "archive",
                    "archive-depth",
                    f"nested deeper than {self.options.archives.max_depth} archives",
                )
            )
            return
        for item in iter_zip(content, budget):
            if isinstance(item, Member):
                member_path = f"{path}!/{item.name.lstrip('/')}"
                if self.options.malware:
                    sha = self._sha(item.data)
                    if sha is not None:
                        self._blocklist(member_path, layer, digest, sha, out)
                    self._yara_scan(member_path, layer, digest, item.data, sha, out)
                self._content(member_path, layer, digest, item.data, out, depth=depth + 1, budget=budget)
            else:
                where = f"{path}!/{item.name}" if item.name else path
                out.skipped.append(Skip(where, layer, "archive", item.reason, item.detail))

    def _sha(self, content: bytes) -> str | None:
        """SHA-256 of a file held in memory when the blocklist needs it; otherwise None, and a
        finding's fingerprint hashes the file then (most files have no finding: not hashed)."""
        if self.options.malware and self.rules.blocklist:
            return hashlib.sha256(content).hexdigest()
        return None

    # --------------------------------------------------------------- malware
    def _blocklist(self, path: str, layer: int | None, digest: str | None, sha: str, out: ScanOutcome) -> None:
        name = self.rules.blocklist.get(sha)
        if name is not None:
            out.findings.append(
                Finding(
                    kind="malware",
                    rule_id=f"sha256:{sha}",
                    severity="critical",
                    title=f"Known-bad file: {name}",
                    engine="sha256-blocklist",
                    path=path,
                    layer_index=layer,
                    layer_digest=digest,
                    fingerprint=sha,
                    remediation="Remove the file and rebuild from a trusted source; investigate how it got in.",
                )
            )

    def _yara_scan(
        self, path: str, layer: int | None, digest: str | None, content: bytes, sha: str | None, out: ScanOutcome
    ) -> None:
        if self._yara is None:
            return
        try:
            results = self._yara.scan(content)
        except yara_x.TimeoutError:
            out.skipped.append(
                Skip(path, layer, "malware", "yara-timeout", f"over {self.options.yara_timeout_seconds}s")
            )
            return
        except yara_x.ScanError as exc:
            out.skipped.append(Skip(path, layer, "malware", "yara-error", str(exc)))
            return
        for rule in results:
            meta: dict[str, Any] = dict(rule.metadata)
            out.findings.append(
                Finding(
                    kind="malware",
                    rule_id=rule.identifier,
                    severity=_yara_severity(meta),
                    title=str(meta.get("description") or meta.get("tc_detection_name") or rule.identifier),
                    engine="yara",
                    path=path,
                    layer_index=layer,
                    layer_digest=digest,
                    fingerprint=sha or hashlib.sha256(content).hexdigest(),
                    remediation="Remove the file, rebuild from trusted sources and investigate its origin.",
                    extra={
                        k: str(v)
                        for k, v in meta.items()
                        if k in {"author", "source", "category", "malware", "tc_detection_type"}
                    }
                    | {"namespace": rule.namespace},
                )
            )

    def _clamav(self, path: str, layer: int | None, digest: str | None, content: bytes, out: ScanOutcome) -> None:
        if self._clamd is None:
            return
        if len(content) > self._clamd.config.max_stream_bytes:
            out.skipped.append(
                Skip(
                    path,
                    layer,
                    "clamav",
                    "too-large",
                    f"{len(content)} bytes > clamd stream limit {self._clamd.config.max_stream_bytes}",
                )
            )
            return
        try:
            signature = self._clamd.instream(content)
        except ClamdError as exc:
            out.skipped.append(Skip(path, layer, "clamav", "clamd-error", str(exc)))
            return
        if signature:
            out.findings.append(
                Finding(
                    kind="malware",
                    rule_id=signature,
                    severity="critical",
                    title=f"ClamAV: {signature}",
                    engine="clamav",
                    path=path,
                    layer_index=layer,
                    layer_digest=digest,
                    fingerprint=hashlib.sha256(content).hexdigest(),
                    remediation="Remove the file, rebuild from trusted sources and investigate its origin.",
                )
            )

    # --------------------------------------------------------------- secrets
    def _secrets(
        self, path: str, layer: int | None, digest: str | None, content: bytes, out: ScanOutcome, skipped: bool | None
    ) -> None:
        ruleset = self.rules.secrets
        if ruleset.path_skipped(path) if skipped is None else skipped:
            return
        if len(content) > self.options.max_secret_bytes:
            out.skipped.append(
                Skip(path, layer, "secret", "too-large", f"{len(content)} bytes > {self.options.max_secret_bytes}")
            )
            return
        if b"\0" in content[:BINARY_SNIFF]:
            if self.options.record_binary_skips:
                out.skipped.append(Skip(path, layer, "secret", "binary", "NUL byte in the first 8000 bytes"))
            return
        if content.isascii():  # most text in images: searched as bytes, decoded only on a match
            matches = ruleset.find(content, path)
            text = content.decode("ascii") if matches else ""
        else:
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError as exc:
                # Still text (no NUL): scan it with replacement characters, as gitleaks would.
                text = content.decode("utf-8", "replace")
                out.skipped.append(
                    Skip(
                        path,
                        layer,
                        "secret",
                        "invalid-utf8",
                        f"decoded with replacement characters ({exc.reason} at {exc.start})",
                        scanned=True,
                    )
                )
            matches = ruleset.find(text, path)
        out.findings.extend(to_findings(text, matches, path=path, layer_index=layer, layer_digest=digest))

    # ---------------------------------------------------------------- config
    def scan_config(self, config_doc: dict[str, Any]) -> ScanOutcome:
        """Checks on the image config JSON: CIS config checks plus secret rules over ``Env``,
        ``Labels`` and each history ``created_by`` (which records RUN build args)."""
        out = ScanOutcome()
        try:
            out.findings.extend(config_checks.check_config(config_doc))
            if self.options.secrets:
                cfg = config_doc.get("config") or {}
                texts: list[tuple[str, str]] = [
                    (f"config.Env[{i}]", str(e)) for i, e in enumerate(cfg.get("Env") or [])
                ]
                texts += [(f"config.Labels[{k}]", f"{k}={v}") for k, v in (cfg.get("Labels") or {}).items()]
                for key in ("Entrypoint", "Cmd"):
                    if cfg.get(key):
                        texts.append((f"config.{key}", " ".join(map(str, cfg[key]))))
                texts += [
                    (f"history[{i}].created_by", str(h.get("created_by") or "")[: config_checks.MAX_HISTORY_TEXT])
                    for i, h in enumerate(config_doc.get("history") or [])
                ]
                for location, raw in texts:
                    text = utf8_clean(raw)
                    matches = self.rules.secrets.find(text, location)
                    found = to_findings(
                        text, matches, path=None, layer_index=None, layer_digest=None, location=location
                    )
                    for f, m in zip(found, matches, strict=True):  # name the variable, never show the value
                        where = config_checks.variable_at(location, text, m.start)
                        out.findings.append(replace(f, extra={**f.extra, **where}) if where else f)
                self._mark_env_secrets(out)
        except Exception as exc:  # malformed config documents are reported, not raised
            log.exception("config scan failed")
            out.skipped.append(Skip("config", None, "config", "internal-error", f"{type(exc).__name__}: {exc}"))
        return out

    @staticmethod
    def _mark_env_secrets(out: ScanOutcome) -> None:
        """A rule-detected secret in ``Env`` also fails CIS 4.10, unless the name check already said so."""
        flagged = {f.location for f in out.findings if f.kind == "config" and f.rule_id == "secret-in-env"}
        for f in list(out.findings):
            if f.kind == "secret" and f.location and f.location.startswith("config.Env[") and f.location not in flagged:
                flagged.add(f.location)
                out.findings.append(
                    config_checks.finding(
                        "secret-in-env",
                        location=f.location,
                        preview=f.preview,
                        fingerprint=f.fingerprint,
                        extra={"secret_rule": f.rule_id},
                    )
                )


def _yara_severity(meta: dict[str, Any]) -> Severity:
    sev = str(meta.get("severity", "")).lower()
    if sev in SEVERITY_ORDER:
        return sev  # type: ignore[return-value]
    return _CATEGORY_SEVERITY.get(str(meta.get("category", "")).upper(), "high")


__all__ = ["ContentScanner", "ScanOptions", "normalize_path", "utf8_clean"]
