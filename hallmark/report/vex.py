"""VEX triage: OpenVEX documents that mark findings ``not_affected`` or ``fixed``.

A statement applies to a finding when one of its vulnerability names/aliases equals the
finding's advisory id or one of its aliases, and one of its products names the finding:

* an image: ``pkg:oci/<name>@sha256%3A<hex>`` (or any string holding the image digest,
  such as ``registry/app@sha256:<hex>``); with ``subcomponents`` only the listed packages
  of that image. ``pkg:oci/<name>`` without a digest, or the bare repository, names every
  image of the repository;
* a package anywhere (a non-OCI purl such as ``pkg:pypi/django@2.2.10``; the version is
  optional and qualifiers are ignored);
* everything, when ``products`` is absent or empty (a global statement).

OpenVEX semantics for time: a statement is in effect from its ``timestamp`` (or
``last_updated``; inherited from the document when absent) and, among statements about
the same finding, the most recent one wins, so a later ``affected`` revokes an earlier
``not_affected``. Statements dated in the future are not yet in effect.

Expiry is not part of OpenVEX 0.2.0, so Hallmark adds one, documented in
docs/report-schema.md: ``valid_until`` (RFC 3339) on a statement or on the document; or,
to stay valid against the strict OpenVEX JSON schema, the token
``hallmark:valid_until=<RFC 3339>`` in the statement's ``status_notes``. An expired
winning statement no longer suppresses; the finding then carries ``vex_expired``.

Suppressed findings stay in the report with ``suppressed: {by, justification, statement,
expires, status, document, timestamp}`` and are left out of the summary counts and of
``--fail-on`` thresholds.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from packageurl import PackageURL

from hallmark.report.base import summarize

STATUSES = ("not_affected", "affected", "fixed", "under_investigation")
SUPPRESSING = ("not_affected", "fixed")
JUSTIFICATIONS = (
    "component_not_present",
    "vulnerable_code_not_present",
    "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary",
    "inline_mitigations_already_exist",
)
_NOTES_EXPIRY = re.compile(r"hallmark:valid_until=(\S+)")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
CLOCK_SKEW = dt.timedelta(minutes=5)


class VexError(ValueError):
    """A document that is not OpenVEX at all (not JSON, no statements list)."""


def _time(value: Any, where: str) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise VexError(f"{where}: timestamp must be an RFC 3339 string, got {value!r}")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise VexError(f"{where}: not an RFC 3339 timestamp: {value!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if t else None


@dataclass(frozen=True)
class VexProduct:
    """One product: its identifiers (``@id`` and ``identifiers.purl``) and subcomponents."""

    ids: tuple[str, ...]
    subcomponents: tuple[str, ...] = ()


@dataclass
class VexStatement:
    vulnerability: str
    aliases: tuple[str, ...]
    products: list[VexProduct]
    status: str
    justification: str | None = None
    impact_statement: str | None = None
    action_statement: str | None = None
    effective: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    index: int = 0

    @property
    def names(self) -> set[str]:
        return {n.upper() for n in (self.vulnerability, *self.aliases) if n}


@dataclass
class VexDocument:
    id: str
    author: str
    timestamp: dt.datetime | None
    statements: list[VexStatement]
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author": self.author,
            "source": self.source,
            "timestamp": _iso(self.timestamp),
            "statements": len(self.statements),
            "warnings": list(self.warnings),
        }


def _ids(obj: Any) -> tuple[str, ...]:
    if isinstance(obj, str):
        return (obj,)
    if not isinstance(obj, Mapping):
        return ()
    out = [str(obj["@id"])] if obj.get("@id") else []
    idents = obj.get("identifiers")
    if isinstance(idents, Mapping) and idents.get("purl"):
        out.append(str(idents["purl"]))
    return tuple(out)


def parse_vex(data: bytes | str | Mapping[str, Any], source: str = "") -> VexDocument:
    """Parse an OpenVEX document (v0.2.0; the older string forms of ``vulnerability`` and
    ``products`` are accepted too). Unusable statements are skipped with a warning."""
    if isinstance(data, bytes | str):
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise VexError(f"{source or 'VEX'}: not JSON: {exc}") from exc
    else:
        doc = data
    if not isinstance(doc, Mapping) or not isinstance(doc.get("statements"), list):
        raise VexError(f"{source or 'VEX'}: not an OpenVEX document (no statements list)")
    ctx = str(doc.get("@context") or "")
    warnings: list[str] = []
    if "openvex" not in ctx:
        warnings.append(f"@context {ctx!r} is not an OpenVEX context; read as OpenVEX anyway")
    doc_time = _time(doc.get("last_updated"), "document") or _time(doc.get("timestamp"), "document")
    doc_expiry = _time(doc.get("valid_until"), "document valid_until")
    out = VexDocument(str(doc.get("@id") or source), str(doc.get("author") or "unknown"), doc_time, [], source)
    for i, raw in enumerate(doc["statements"]):
        where = f"statement {i}"
        if not isinstance(raw, Mapping):
            warnings.append(f"{where}: not an object; skipped")
            continue
        vuln = raw.get("vulnerability")
        aliases: tuple[str, ...] = ()
        if isinstance(vuln, str):
            name = vuln
        elif isinstance(vuln, Mapping) and (vuln.get("name") or vuln.get("@id")):
            name = str(vuln.get("name") or str(vuln["@id"]).rstrip("/").rsplit("/", 1)[-1])
            aliases = tuple(str(a) for a in vuln.get("aliases") or [])
        else:
            warnings.append(f"{where}: no vulnerability name; skipped")
            continue
        status = raw.get("status")
        if status not in STATUSES:
            warnings.append(f"{where} ({name}): unknown status {status!r}; skipped")
            continue
        just = raw.get("justification")
        impact = raw.get("impact_statement")
        if status == "not_affected" and not (just or impact):
            warnings.append(f"{where} ({name}): not_affected without justification or impact_statement; skipped")
            continue
        if just and just not in JUSTIFICATIONS:
            warnings.append(f"{where} ({name}): justification {just!r} is not an OpenVEX justification")
        if status == "affected" and not raw.get("action_statement"):
            warnings.append(f"{where} ({name}): affected without action_statement")
        try:
            effective = _time(raw.get("last_updated"), where) or _time(raw.get("timestamp"), where) or doc_time
            expiry = _time(raw.get("valid_until"), f"{where} valid_until")
            m = _NOTES_EXPIRY.search(str(raw.get("status_notes") or ""))
            if expiry is None and m:
                expiry = _time(m.group(1), f"{where} status_notes")
        except VexError as exc:
            warnings.append(f"{exc}; skipped")
            continue
        products = []
        for p in raw.get("products") or []:
            ids = _ids(p)
            subs = tuple(s for sc in (p.get("subcomponents") or [] if isinstance(p, Mapping) else []) for s in _ids(sc))
            if ids:
                products.append(VexProduct(ids, subs))
            else:
                warnings.append(f"{where} ({name}): product without @id or purl ignored")
        if raw.get("products") and not products:
            warnings.append(f"{where} ({name}): no usable product; skipped (it would otherwise apply to everything)")
            continue
        out.statements.append(
            VexStatement(
                vulnerability=name,
                aliases=aliases,
                products=products,
                status=str(status),
                justification=str(just) if just else None,
                impact_statement=str(impact) if impact else None,
                action_statement=str(raw["action_statement"]) if raw.get("action_statement") else None,
                effective=effective,
                valid_until=expiry or doc_expiry,
                index=i,
            )
        )
    out.warnings = warnings
    return out


def load_vex(path: str | Path) -> VexDocument:
    """Read one OpenVEX JSON file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise VexError(f"{p}: {exc.strerror or exc}") from exc
    return parse_vex(data, str(p))


# ------------------------------------------------------------------ matching
def _purl(text: str) -> PackageURL | None:
    if not text.startswith("pkg:"):
        return None
    try:
        return PackageURL.from_string(text)
    except ValueError:
        return None


def _norm_name(p: PackageURL) -> str:
    name = p.name.lower()
    return re.sub(r"[-_.]+", "-", name) if p.type == "pypi" else name


def _same_package(pattern: str, target: str | None, target_name: str) -> bool:
    """Does the statement's package identifier name this finding's package?"""
    pp = _purl(pattern)
    if pp is None:
        return pattern == target_name or (target is not None and pattern == target)
    tp = _purl(target) if target else None
    if tp is None:
        return False

    def key(p: PackageURL) -> tuple[str, str, str]:
        return p.type, (p.namespace or "").lower(), _norm_name(p)

    if key(pp) != key(tp):
        return False
    return not pp.version or pp.version == tp.version


def _repo_base(repository: str) -> str:
    base = repository.split("@", 1)[0]
    head, _, last = base.rpartition("/")
    if ":" in last:
        last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def _names_image(ident: str, repository: str, digest: str) -> bool | None:
    """True/False when ``ident`` names an image (this one or another), None when it is not an image id."""
    p = _purl(ident)
    if p is not None:
        if p.type != "oci":
            return None
        if p.version:
            return urllib.parse.unquote(p.version) == digest
        if p.name.lower() != _repo_base(repository).rsplit("/", 1)[-1].lower():
            return False
        repo_url = (p.qualifiers or {}).get("repository_url") if isinstance(p.qualifiers, dict) else None
        return repo_url is None or repo_url == _repo_base(repository)
    found = _DIGEST.search(ident)
    if found:
        return found.group(0) == digest
    if repository and ident == _repo_base(repository):
        return True
    return None


def _applies(st: VexStatement, finding: Mapping[str, Any], repository: str, digest: str) -> bool:
    ids = {str(finding.get("advisory_id") or "").upper(), *(str(a).upper() for a in finding.get("aliases") or [])}
    if not (st.names & ids):
        return False
    if not st.products:
        return True
    purl = finding.get("purl")
    name = str(finding.get("package") or "")
    for prod in st.products:
        for ident in prod.ids:
            image = _names_image(ident, repository, digest)
            if image is None:
                if _same_package(ident, purl, name):
                    return True
            elif image:
                if not prod.subcomponents or any(_same_package(s, purl, name) for s in prod.subcomponents):
                    return True
    return False


def _mark(doc: VexDocument, st: VexStatement) -> dict[str, Any]:
    return {
        "status": st.status,
        "by": doc.author,
        "justification": st.justification,
        "statement": st.impact_statement or st.action_statement,
        "expires": _iso(st.valid_until),
        "document": doc.id,
        "timestamp": _iso(st.effective),
    }


def apply_vex(
    report: Mapping[str, Any], documents: Sequence[VexDocument], now: dt.datetime | None = None
) -> dict[str, Any]:
    """A copy of ``report`` with VEX applied (earlier VEX marks are replaced, so a stored
    report can be re-triaged), its ``vex`` section filled and its ``summary`` recomputed."""
    now = now or dt.datetime.now(dt.UTC)
    out = copy.deepcopy(dict(report))
    image = out.get("image") or {}
    repository, digest = str(image.get("repository") or ""), str(image.get("digest") or "")
    pending: list[str] = []
    candidates: list[tuple[VexDocument, VexStatement]] = []
    for doc in documents:
        for st in doc.statements:
            if st.effective is not None and st.effective > now + CLOCK_SKEW:
                when = _iso(st.effective)
                pending.append(f"{doc.source or doc.id}: {st.vulnerability} dated {when} is not yet in effect")
                continue
            candidates.append((doc, st))
    suppressed = expired = 0
    for f in out.get("findings") or []:
        for key in ("suppressed", "vex", "vex_expired"):
            f.pop(key, None)
        matching = [(d, s) for d, s in candidates if _applies(s, f, repository, digest)]
        if not matching:
            continue
        order = {id(d): n for n, d in enumerate(documents)}
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        doc, st = max(matching, key=lambda ds: (ds[1].effective or epoch, order[id(ds[0])], ds[1].index))
        mark = _mark(doc, st)
        if st.status not in SUPPRESSING:
            f["vex"] = mark  # affected / under_investigation: informative, still counted
        elif st.valid_until is not None and st.valid_until <= now:
            f["vex_expired"] = mark
            expired += 1
        else:
            f["suppressed"] = mark
            suppressed += 1
    out["vex"] = {
        "documents": [d.describe() for d in documents],
        "applied_at": _iso(now),
        "suppressed": suppressed,
        "expired": expired,
        "not_yet_in_effect": pending,
    }
    out["summary"] = summarize(out)
    return out


def vex_documents(paths: Iterable[str | Path]) -> list[VexDocument]:
    return [load_vex(p) for p in paths]
