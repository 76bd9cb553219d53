"""The admission policy of one namespace, from ``[admission]`` and its per-namespace overrides.

Pure configuration logic (no database): which mode applies, whether a namespace or an image is
exempt, whether a registry host is Hallmark itself or allow-listed. The digest-level rules
(:class:`DigestRules`) are what a cached decision depends on besides the image's own state, so
they are the "policy version" of the decision cache: two namespaces with the same rules share
cached decisions, and changing the configuration (a restart) starts from an empty cache.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from urllib.parse import urlsplit

from hallmark.admission.references import ImageRef
from hallmark.config import AdmissionConfig, AdmissionRules, Config

_RULE_FIELDS = ("mode", "allowed_registries", "exempt_images", "require_signature", "min_grade", "max_severity")


@dataclass(frozen=True)
class DigestRules:
    """What must hold for one Hallmark digest, besides being approved (or deprecated) and not retired."""

    require_signature: bool = False
    min_grade: str | None = None
    max_severity: str | None = None


@dataclass(frozen=True)
class Policy:
    """The effective policy of one namespace."""

    mode: str
    allowed_registries: tuple[str, ...]
    exempt_images: tuple[str, ...]
    rules: DigestRules
    source: str  # "[admission]" or "[admission.namespaces.NAME]": named in messages

    def registry_allowed(self, ref: ImageRef) -> str | None:
        """The allow-list entry that admits ``ref`` (a host, ``host/path`` prefix or glob), or None."""
        for entry in self.allowed_registries:
            e = entry.lower().rstrip("/")
            if any(c in e for c in "*?["):
                if fnmatch.fnmatchcase(ref.host, e) or fnmatch.fnmatchcase(ref.name, e):
                    return entry
            elif ref.host == e or ref.name == e or ref.name.startswith(e + "/"):
                return entry
        return None

    def image_exempt(self, raw: str, ref: ImageRef | None) -> str | None:
        """The ``exempt_images`` glob matching the image as written or normalised, or None."""
        names = {raw} if ref is None else {raw, ref.normalized, ref.name}
        for pattern in self.exempt_images:
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                return pattern
        return None


class PolicySet:
    """Every namespace's policy from one configuration, resolved once per namespace name."""

    def __init__(self, config: Config) -> None:
        self.cfg: AdmissionConfig = config.admission
        self.hallmark_hosts = hallmark_hosts(config)
        self._memo: dict[str, Policy] = {}

    @property
    def failure_policy(self) -> str:
        return self.cfg.failure_policy

    def namespace_exempt(self, namespace: str) -> str | None:
        for pattern in self.cfg.exempt_namespaces:
            if namespace == pattern or fnmatch.fnmatchcase(namespace, pattern):
                return pattern
        return None

    def override_for(self, namespace: str) -> tuple[str, AdmissionRules] | None:
        """The namespace's own table, else the first glob table matching it (in configuration order)."""
        tables = self.cfg.namespaces
        if namespace in tables:
            return namespace, tables[namespace]
        for key, table in tables.items():
            if any(c in key for c in "*?[") and fnmatch.fnmatchcase(namespace, key):
                return key, table
        return None

    def for_namespace(self, namespace: str) -> Policy:
        found = self._memo.get(namespace)
        if found is not None:
            return found
        values = {f: getattr(self.cfg, f) for f in _RULE_FIELDS}
        source = "[admission]"
        override = self.override_for(namespace)
        if override is not None:
            key, table = override
            values.update({f: getattr(table, f) for f in _RULE_FIELDS if getattr(table, f) is not None})
            source = f'[admission.namespaces."{key}"]'
        policy = Policy(
            mode=values["mode"] or "enforce",
            allowed_registries=tuple(values["allowed_registries"] or ()),
            exempt_images=tuple(values["exempt_images"] or ()),
            rules=DigestRules(bool(values["require_signature"]), values["min_grade"], values["max_severity"]),
            source=source,
        )
        if len(self._memo) < 10_000:  # namespace names come from requests: bounded
            self._memo[namespace] = policy
        return policy

    def is_hallmark(self, ref: ImageRef) -> bool:
        return ref.host in self.hallmark_hosts


def hallmark_hosts(config: Config) -> frozenset[str]:
    """Host names that mean this registry: ``[server] public_hosts``, the host of ``public_url``
    and the listen address (``host:port``; a wildcard listen address names no host)."""
    hosts = {h.lower() for h in config.server.public_hosts}
    if config.server.public_url:
        netloc = urlsplit(config.server.public_url).netloc.lower()
        if netloc:
            hosts.add(netloc.rsplit("@", 1)[-1])
    listen = config.server.listen.lower()
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host not in ("0.0.0.0", "::", ""):  # noqa: S104 (a wildcard, not a bind)
        hosts.add(listen)
    return frozenset(hosts)
