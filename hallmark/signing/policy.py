"""Notary Project OCI trust policy (``trustpolicy.json`` version 1.0): parsing, validation, selection.

A policy is validated as a whole before any signature is looked at, so a malformed document can never
weaken verification. Error texts follow notation's where the real vectors quote them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from hallmark.signing.certs import TRUST_STORE_TYPES
from hallmark.signing.errors import PolicyError

CHECKS = ("integrity", "authenticity", "authenticTimestamp", "expiry", "revocation")
ENFORCE, LOG, SKIP = "enforce", "log", "skip"
LEVELS: dict[str, dict[str, str]] = {
    "strict": dict.fromkeys(CHECKS, ENFORCE),
    "permissive": {
        "integrity": ENFORCE,
        "authenticity": ENFORCE,
        "authenticTimestamp": LOG,
        "expiry": LOG,
        "revocation": LOG,
    },
    "audit": {"integrity": ENFORCE, **dict.fromkeys(CHECKS[1:], LOG)},
    "skip": dict.fromkeys(CHECKS, SKIP),
}
VERIFY_TIMESTAMP = ("always", "afterCertExpiry")

_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_DOMAIN}(?:/{_PATH_COMPONENT})+$")
_MANDATORY_RDN = {"C": "C", "ST": "ST", "S": "ST", "O": "O"}
_OID_SHORT = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "E",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.9": "STREET",
    "2.5.4.17": "POSTALCODE",
}


def parse_dn(text: str) -> dict[str, str]:
    """Parse an RFC 4514 style DN (``CN=a,O=b``) into attribute -> value; ``S`` means ``ST``."""
    parts: list[str] = []
    buf, escaped = "", False
    for ch in text:
        if escaped:
            buf += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",+":
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    out: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key, value = key.strip().upper(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"malformed RDN {part.strip()!r}")
        key = "ST" if key == "S" else key
        if key in out:
            raise ValueError(f"attribute {key} appears more than once")
        out[key] = value
    return out


def cert_subject_map(cert: x509.Certificate) -> dict[str, str]:
    out: dict[str, str] = {}
    for attr in cert.subject:
        out[_OID_SHORT.get(attr.oid.dotted_string, attr.oid.dotted_string)] = str(attr.value)
    return out


@dataclass
class TrustPolicy:
    """One statement of a trust policy document."""

    name: str
    registry_scopes: list[str]
    level: str
    actions: dict[str, str]
    verify_timestamp: str = "always"
    trust_stores: list[tuple[str, str]] = field(default_factory=list)
    trusted_identities: list[str] = field(default_factory=list)
    identity_maps: list[dict[str, str]] = field(default_factory=list)

    @property
    def any_identity(self) -> bool:
        return self.trusted_identities == ["*"]

    def identity_matches(self, cert: x509.Certificate) -> bool:
        if self.any_identity:
            return True
        subject = cert_subject_map(cert)
        return any(all(subject.get(k) == v for k, v in ident.items()) for ident in self.identity_maps)

    def stores(self, store_type: str) -> list[str]:
        return [name for t, name in self.trust_stores if t == store_type]


@dataclass
class TrustPolicyDocument:
    version: str
    statements: list[TrustPolicy]

    def statement_for(self, repository: str) -> TrustPolicy:
        """The statement whose registry scope names ``repository``, else the wildcard one."""
        for st in self.statements:
            if repository in st.registry_scopes:
                return st
        for st in self.statements:
            if "*" in st.registry_scopes:
                return st
        raise PolicyError(f"artifact {repository!r} has no applicable oci trust policy statement")


def load_policy(data: bytes | str) -> TrustPolicyDocument:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise PolicyError(f"trust policy is not valid JSON: {exc}") from exc
    return parse_policy(doc)


def _err(name: str, msg: str) -> PolicyError:
    return PolicyError(f'oci trust policy statement "{name}" {msg}')


def parse_policy(doc: Any) -> TrustPolicyDocument:
    """Validate a whole trust policy document; the first violation raises ``PolicyError``."""
    if not isinstance(doc, dict):
        raise PolicyError("trust policy document must be a JSON object")
    version = doc.get("version")
    if version != "1.0":
        raise PolicyError(f'trust policy document has unsupported version {version!r} (expected "1.0")')
    raw = doc.get("trustPolicies")
    if not isinstance(raw, list) or not raw:
        raise PolicyError("trust policy document has no trustPolicies statements")
    statements: list[TrustPolicy] = []
    names: set[str] = set()
    scope_owner: dict[str, str] = {}
    for entry in raw:
        st = _parse_statement(entry)
        if st.name in names:
            raise PolicyError(
                f'multiple oci trust policy statements use the same name "{st.name}", statement names must be unique'
            )
        names.add(st.name)
        for scope in st.registry_scopes:
            if scope in scope_owner:
                raise PolicyError(
                    f'registry scope "{scope}" is present in multiple oci trust policy statements, '
                    "one registry scope value can only be associated with one statement"
                )
            scope_owner[scope] = st.name
        statements.append(st)
    return TrustPolicyDocument(version, statements)


def _parse_statement(entry: Any) -> TrustPolicy:
    if not isinstance(entry, dict):
        raise PolicyError("trust policy statement must be a JSON object")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PolicyError("a trust policy statement is missing a name, every statement requires a name")
    scopes = entry.get("registryScopes")
    if not isinstance(scopes, list) or not scopes:
        raise _err(name, "has zero registry scopes, it must specify registry scopes with at least one value")
    seen: set[str] = set()
    for scope in scopes:
        if not isinstance(scope, str):
            raise _err(name, f"has a non-string registry scope {scope!r}")
        if scope in seen:
            raise PolicyError(
                f'registry scope "{scope}" is present in multiple oci trust policy statements, '
                "one registry scope value can only be associated with one statement"
            )
        seen.add(scope)
        if scope != "*" and not _REPOSITORY.match(scope):
            raise PolicyError(
                f'registry scope "{scope}" is not valid, make sure it is a fully qualified repository '
                "without tag or digest"
            )
    if "*" in scopes and len(scopes) > 1:
        raise _err(
            name,
            "uses wildcard registry scope '*', a wildcard scope cannot be used in conjunction with other scope values",
        )

    sv = entry.get("signatureVerification")
    if not isinstance(sv, dict) or not isinstance(sv.get("level"), str):
        raise _err(name, "is missing signatureVerification.level")
    level = sv["level"]
    if level not in LEVELS:
        raise _err(name, f'uses invalid signatureVerification level "{level}"')
    actions = dict(LEVELS[level])
    override = sv.get("override") or {}
    if not isinstance(override, dict):
        raise _err(name, "has a malformed signatureVerification.override")
    if override and level == "skip":
        raise _err(name, "sets level to skip, so signatureVerification.override cannot be used")
    for check, action in override.items():
        if check not in CHECKS:
            raise _err(name, f'has invalid check "{check}" in signatureVerification.override')
        if check == "integrity":
            raise _err(name, 'has an invalid override: "integrity" verification can not be overridden')
        if action not in (ENFORCE, LOG, SKIP):
            raise _err(name, f'has invalid action "{action}" for check "{check}"')
        if check == "authenticity" and action == SKIP:
            raise _err(name, '"authenticity" verification can not be skipped')
        actions[check] = action
    verify_ts = sv.get("verifyTimestamp", "always")
    if verify_ts not in VERIFY_TIMESTAMP:
        raise _err(name, f'has invalid verifyTimestamp "{verify_ts}", allowed: always, afterCertExpiry')

    stores_raw = entry.get("trustStores") or []
    idents_raw = entry.get("trustedIdentities") or []
    if not isinstance(stores_raw, list) or not isinstance(idents_raw, list):
        raise _err(name, "has malformed trustStores or trustedIdentities (they must be lists)")
    if level == "skip":
        if stores_raw or idents_raw:
            raise _err(
                name,
                "is set to skip signature verification but configured with trust stores and/or "
                "trusted identities, remove them",
            )
        return TrustPolicy(name, list(scopes), level, actions, verify_ts)
    if not stores_raw or not idents_raw:
        raise _err(name, "is either missing trust stores or trusted identities, both must be specified")
    stores: list[tuple[str, str]] = []
    for value in stores_raw:
        if not isinstance(value, str) or ":" not in value:
            raise _err(
                name,
                f'has malformed trust store value "{value}". The required format is <TrustStoreType>:<TrustStoreName>',
            )
        stype, _, sname = value.partition(":")
        if stype not in TRUST_STORE_TYPES:
            raise _err(name, f'uses an unsupported trust store type "{stype}" in trust store value "{value}"')
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", sname):
            raise _err(name, f'uses an unsupported trust store name "{sname}" in trust store value "{value}"')
        if (stype, sname) in stores:
            raise _err(name, f'has overlapping trust stores: "{value}" is listed more than once')
        stores.append((stype, sname))
    if not any(t in ("ca", "signingAuthority") for t, _ in stores):
        raise _err(name, "needs at least one ca or signingAuthority trust store")
    idents, maps = _parse_identities(name, idents_raw)
    return TrustPolicy(name, list(scopes), level, actions, verify_ts, stores, idents, maps)


def _parse_identities(name: str, raw: list[Any]) -> tuple[list[str], list[dict[str, str]]]:
    if "*" in raw:
        if len(raw) > 1:
            raise _err(
                name,
                "uses a wildcard trusted identity '*', "
                "a wildcard identity cannot be used in conjunction with other values",
            )
        return ["*"], []
    maps: list[dict[str, str]] = []
    for ident in raw:
        if not isinstance(ident, str) or not ident.strip():
            raise _err(name, "has an empty trusted identity")
        prefix, sep, value = ident.partition(":")
        if not sep or prefix.strip() != "x509.subject":
            raise _err(
                name,
                f'has trusted identity "{ident}" without an identity prefix; '
                "use the form x509.subject:<distinguished name>",
            )
        if not value.strip():
            raise _err(name, f'has trusted identity "{ident}" with an empty value')
        try:
            dn = parse_dn(value)
        except ValueError as exc:
            raise _err(name, f'has trusted identity "{ident}" with a malformed distinguished name: {exc}') from exc
        for attr in ("C", "ST", "O"):
            if attr not in dn:
                raise PolicyError(
                    f'distinguished name (DN) "{value.strip()}" has no mandatory RDN attribute for "{attr}", '
                    "it must contain 'C', 'ST' or 'S', and 'O' RDN attributes at a minimum"
                )
        maps.append(dn)
    for i, a in enumerate(maps):
        for b in maps[i + 1 :]:
            if all(b.get(k) == v for k, v in a.items()) or all(a.get(k) == v for k, v in b.items()):
                raise _err(name, f"has overlapping x509 trustedIdentities, {_fmt(a)} overlaps with {_fmt(b)}")
    return [str(x) for x in raw], maps


def _fmt(dn: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in dn.items())
