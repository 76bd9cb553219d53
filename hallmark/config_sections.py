"""The configuration's sections: one pydantic model per ``[section]`` of the TOML file.

Each model holds its keys' defaults, bounds and checks, so a reader finds what a section
accepts in one place; how file, environment and flags are merged into them is
:mod:`hallmark.config`'s business (``Config`` there puts the sections together).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_LISTEN = "127.0.0.1:5000"


class Section(BaseModel):
    """Base of every section: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too) with a clear error."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ValueError(f"listen address must be HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class ServerConfig(Section):
    listen: str = DEFAULT_LISTEN
    # Public base URL used in Location headers and token realms; derived from the request when unset.
    public_url: str | None = None
    workers: int = Field(default=1, ge=1, le=64)
    # Slow clients (see hallmark.web.timeouts): a request head must arrive within header_timeout_seconds
    # (from the connection opening, or from the first byte of the next request on a kept-alive one);
    # a body must bring at least body_min_rate_bytes_per_second x body_timeout_seconds bytes (and at
    # least one) in every body_timeout_seconds during which the server waits for it; a kept-alive
    # connection with no request is closed after idle_timeout_seconds.
    header_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    body_min_rate_bytes_per_second: int = Field(default=1024, ge=0)
    idle_timeout_seconds: float = Field(default=75.0, gt=0, le=3600)
    # Proxies (addresses or CIDRs) whose forwarding header names the client (hallmark.web.client); empty:
    # the peer address is the client. The header they append: "x-forwarded-for" or "forwarded" (RFC 7239).
    trusted_proxies: list[str] = []
    trusted_proxy_header: str = "x-forwarded-for"
    # HTTPS for everything served (registry, API, portal, webhooks): a PEM certificate chain (leaf first) and
    # its unencrypted PEM key, e.g. from `hallmark tls generate`; re-read when the files change (hallmark.web.tls).
    tls_cert: str | None = None
    tls_key: str | None = None
    # Host names (host or host:port) clients use for this registry, e.g. in Kubernetes image
    # references; admission control treats them, and the listen address, as Hallmark itself.
    public_hosts: list[str] = []
    # Observability (hallmark.web.observe): log lines as text or one JSON object per line; /metrics
    # (Prometheus) on the main port for administrators, plus an unauthenticated listener of its own
    # when metrics_listen (HOST:PORT) is set, for a scraper on a private network.
    log_format: str = "text"
    access_log: bool = True  # one line per request (logger hallmark.access); false: metrics only
    metrics: bool = True
    metrics_listen: str | None = None

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, v: str) -> str:
        if v not in ("text", "json"):
            raise ValueError("log_format must be text or json")
        return v

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, v: str | None) -> str | None:
        if v:
            parse_listen(v)
        return v or None

    @model_validator(mode="after")
    def _check_tls_pair(self) -> ServerConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be set together")
        return self

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, v: Any) -> Any:
        """A comma-separated string is accepted too (from the environment)."""
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @field_validator("public_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: Any) -> Any:
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @field_validator("public_hosts")
    @classmethod
    def _check_hosts(cls, v: list[str]) -> list[str]:
        for host in v:
            if not host or "/" in host or any(c.isspace() for c in host):
                raise ValueError(f"public_hosts: {host!r} is not a host name (host or host:port, no scheme or path)")
        return [h.lower() for h in v]

    @field_validator("trusted_proxy_header")
    @classmethod
    def _check_proxy_header(cls, v: str) -> str:
        if v.lower() not in ("x-forwarded-for", "forwarded"):
            raise ValueError("trusted_proxy_header must be x-forwarded-for or forwarded")
        return v.lower()

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {net!r} is not an IP address or CIDR") from None
        return v


class StorageConfig(Section):
    driver: str = "filesystem"
    # Blob folder; defaults to <data_dir>/blobs.
    path: str | None = None
    # driver = "s3" (any S3-compatible server): see hallmark.storage.s3.
    bucket: str | None = None
    prefix: str = ""  # keys live under <prefix>/blobs/..., <prefix>/_uploads/...
    endpoint: str | None = None  # e.g. "https://minio.example:9000"; None: AWS
    region: str | None = None
    path_style: bool = False  # bucket in the path, not the host name (MinIO, Ceph, most self-hosted)
    # Secrets: never logged nor in API answers. Unset: environment / the standard AWS chain.
    access_key: str | None = Field(default=None, repr=False)
    secret_key: str | None = Field(default=None, repr=False)
    redirect: bool = False  # answer blob GETs with 307 to a presigned URL instead of streaming
    redirect_expiry_seconds: int = Field(default=600, ge=10, le=7 * 24 * 3600)
    # Failed S3 calls (throttling 503 SlowDown, 5xx, timeouts, dropped connections) are retried with
    # exponential backoff up to max_attempts tries in all; a call waits timeout_seconds for an answer.
    max_attempts: int = Field(default=5, ge=1, le=20)
    timeout_seconds: float = Field(default=60, gt=0, le=3600)

    @field_validator("driver")
    @classmethod
    def _check_driver(cls, v: str) -> str:
        if v not in {"filesystem", "s3"}:
            raise ValueError(f"unknown storage driver {v!r} (known: filesystem, s3)")
        return v

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        return v.strip("/")

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith(("https://", "http://")) or not v.split("://", 1)[1].strip("/")):
            raise ValueError(f"storage.endpoint must be an http(s) URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_bucket(self) -> StorageConfig:
        if self.driver == "s3" and not self.bucket:
            raise ValueError("storage.driver = 's3' needs storage.bucket")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("storage.access_key and storage.secret_key go together")
        return self


class DatabaseConfig(Section):
    # SQLAlchemy URL; defaults to SQLite in WAL mode at <data_dir>/hallmark.db.
    url: str | None = None
    pool_size: int = Field(default=8, ge=1, le=256)


class RegistryConfig(Section):
    delete_enabled: bool = True
    upload_expiry_seconds: int = Field(default=24 * 3600, ge=60)
    upload_cleanup_interval_seconds: int = Field(default=600, ge=1)
    max_manifest_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    default_page_size: int = Field(default=1000, ge=1, le=100_000)
    max_page_size: int = Field(default=10_000, ge=1, le=100_000)
    referrers_page_size: int = Field(default=1000, ge=1, le=100_000)
    # Uploads one principal may have open: sessions holding data plus uploads in progress; 0: no limit.
    max_open_uploads_per_principal: int = Field(default=100, ge=0)


class PipelineConfig(Section):
    # Index, scan and sign every pushed image in the background.
    enabled: bool = True
    # Job-running threads inside `hallmark serve` (0: leave jobs to `hallmark worker` processes).
    workers: int = Field(default=1, ge=0, le=64)
    poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # A claimed job is another worker's after this long without finishing (its worker died or hangs);
    # index jobs of the large lane get index.max_job_seconds + 300 at least.
    lease_seconds: int = Field(default=600, ge=1, le=7 * 86400)
    # Content checks (malware, secrets, configuration) during indexing.
    content_checks: bool = True
    # Rule bundles (yara/, secrets/, blocklist) downloaded by `hallmark db update`; defaults to <data_dir>/rules.
    rules_dir: str | None = None


class AdvisoryConfig(Section):
    # Where `hallmark db update` reads feeds: an https base URL in production, or a mirror folder.
    osv_url: str = "https://osv-vulnerabilities.storage.googleapis.com"
    osv_ecosystems: list[str] = [
        "PyPI",
        "npm",
        "Go",
        "crates.io",
        "Maven",
        "RubyGems",
        "Packagist",
        "NuGet",
        "Debian",
        "Alpine",
    ]
    alpine_releases: list[str] = ["v3.18", "v3.19", "v3.20", "v3.21"]
    debian_tracker_url: str = "https://security-tracker.debian.org/tracker/data/json"
    security_support_url: str = "https://salsa.debian.org/debian/debian-security-support/-/raw/master"
    alpine_secdb_url: str = "https://secdb.alpinelinux.org"
    kev_url: str = "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json"
    # FIRST EPSS daily scores; empty to skip.
    epss_url: str = "https://epss.cyentia.com/epss_scores-current.csv.gz"
    mirror: str | None = None
    update_interval_hours: float = Field(default=6.0, ge=0)
    webhooks: list[str] = []
    webhook_secret: str | None = None


class SigningConfig(Section):
    # Enterprise key and certificate chain (PEM/PKCS#8 or PKCS#12); reports and promotions are signed when set.
    key: str | None = None
    cert: str | None = None
    envelope: str = "jws"
    # Notary trust policy (JSON file) and trust store (folder with x509/<type>/<name>/) for the verification API.
    trust_policy: str | None = None
    trust_store: str | None = None

    @field_validator("envelope")
    @classmethod
    def _check_envelope(cls, v: str) -> str:
        if v not in {"jws", "cose"}:
            raise ValueError("envelope must be jws or cose")
        return v


class CatalogConfig(Section):
    # Promotion gates for approval (staging/deprecated -> approved); see docs/architecture.md.
    gate_max_severity: str = "critical"  # refuse unsuppressed findings at or above this; "none" turns it off
    require_complete_scan: bool = True  # advisory data missing for the OS release: only with force + reason
    require_signature_verification: bool = False  # the trust policy must verify an existing signature
    block_malware: bool = True

    @field_validator("gate_max_severity")
    @classmethod
    def _check_severity(cls, v: str) -> str:
        if v not in {"critical", "high", "medium", "low", "none"}:
            raise ValueError("gate_max_severity must be critical, high, medium, low or none")
        return v


class IndexConfig(Section):
    """What indexing one image may cost (``[index]``; hallmark.index.limits.Limits), and the job lanes.

    A cap hit fails the image with the reason ("index failed: image cap: ..."), never a partial "done".
    """

    max_file_bytes: int = Field(default=512 << 20, ge=1)  # one file a detector reads; larger: skipped, warning
    max_layer_bytes: int = Field(default=32 << 30, ge=1)  # uncompressed bytes of one layer
    max_entries_per_layer: int = Field(default=2_000_000, ge=1)
    max_entries_per_image: int = Field(default=4_000_000, ge=1)
    max_path_bytes_per_image: int = Field(default=512 << 20, ge=1)  # entry names kept for the merge
    max_packages_per_image: int = Field(default=20_000, ge=1)  # found in all files of all layers; SBOMs of 20k: ~20 s
    max_nested_archive_bytes: int = Field(default=2 << 30, ge=0)  # jars in wars etc., opened in memory
    max_nested_archive_depth: int = Field(default=4, ge=0, le=32)
    max_job_seconds: float = Field(default=900.0, gt=0)  # wall clock for one image in the large-job lane
    max_job_memory_bytes: int = Field(default=2 << 30, ge=1 << 20)  # accounted: names, packages, files read
    # Every index job first runs for at most slice_seconds among the other jobs; one that needs longer,
    # or whose layers are over large_job_bytes compressed, runs again in the large-job lane, served by
    # large_workers threads of `hallmark serve` of its own, so it never holds up other images.
    slice_seconds: float = Field(default=60.0, gt=0)
    large_job_bytes: int = Field(default=2 << 30, ge=0)
    large_workers: int = Field(default=1, ge=0, le=64)


class LifecycleConfig(Section):
    """``[lifecycle]``: health grades, end of life, deprecation at pull, tag expiration, retention, scheduler."""

    eol_soon_days: int = Field(default=90, ge=0, le=3650)  # "eol_soon" this many days before end of life
    auto_deprecate_eol_os: bool = False  # deprecate approved images whose base OS is past end of life
    auto_retire_after_days: int | None = Field(default=None, ge=0)  # retire this long after deprecation
    retired_pull: str = "deny"  # default for namespaces without their own setting: deny (403) or warn
    time_machine_days: float = Field(default=14, ge=0, le=3650)  # tag restore window (repository default)
    tag_expiry_default: str | None = None  # e.g. "30d": tags without a label expire after this
    endoflife_url: str = "https://endoflife.date/api"
    scheduler: bool = True  # run periodic jobs inside ``hallmark serve``
    scheduler_poll_seconds: float = Field(default=60, gt=0, le=3600)
    grades_interval_hours: float = Field(default=24, gt=0)
    eol_interval_hours: float = Field(default=24, gt=0)  # end-of-life statuses as of today
    policy_interval_hours: float = Field(default=24, gt=0)  # auto_deprecate_eol_os / auto_retire_after_days
    expiration_interval_minutes: float = Field(default=5, gt=0)
    retention_interval_hours: float = Field(default=24, gt=0)
    gc_interval_hours: float = Field(default=24, ge=0)  # 0: garbage collection only on demand
    gc_grace_seconds: int = Field(default=3600, ge=0)

    @field_validator("retired_pull")
    @classmethod
    def _check_retired_pull(cls, v: str) -> str:
        if v not in {"deny", "warn"}:
            raise ValueError("retired_pull must be deny or warn")
        return v

    @field_validator("tag_expiry_default")
    @classmethod
    def _check_tag_expiry(cls, v: str | None) -> str | None:
        if v:
            from hallmark.lifecycle.durations import parse_duration

            parse_duration(v)  # 90s, 30m, 12h, 2d or 3w, as in expires-after labels
        return v or None


ADMISSION_MODES = ("enforce", "audit", "off")
GRADE_LETTERS = ("A", "B", "C", "D", "E", "F")
ADMISSION_SEVERITIES = ("critical", "high", "medium", "low")


def _str_list(v: Any) -> Any:
    """A comma-separated string is accepted for a list (from the environment)."""
    return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v


class AdmissionRules(Section):
    """The rules of ``[admission]`` a namespace may override (``[admission.namespaces.NAME]``);
    None in an override means "as in ``[admission]``". See docs/admission.md."""

    mode: str | None = None  # enforce | audit (allow, with the denials as warnings) | off
    allowed_registries: list[str] | None = None  # besides Hallmark: hosts or host/path prefixes, globs
    exempt_images: list[str] | None = None  # globs over the reference as written and normalised
    require_signature: bool | None = None  # a valid enterprise signature under the trust policy
    min_grade: str | None = None  # A..F: deny images graded worse (or not graded)
    max_severity: str | None = None  # deny unsuppressed findings at or above: critical|high|medium|low

    _lists = field_validator("allowed_registries", "exempt_images", mode="before")(_str_list)

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, v: str | None) -> str | None:
        if v is not None and v not in ADMISSION_MODES:
            raise ValueError("mode must be enforce, audit or off")
        return v

    @field_validator("min_grade")
    @classmethod
    def _check_grade(cls, v: str | None) -> str | None:
        if v is not None and v.upper() not in GRADE_LETTERS:
            raise ValueError("min_grade must be one of A, B, C, D, E, F")
        return v.upper() if v else None

    @field_validator("max_severity")
    @classmethod
    def _check_max_severity(cls, v: str | None) -> str | None:
        if v is not None and v.lower() not in (*ADMISSION_SEVERITIES, "none"):
            raise ValueError("max_severity must be critical, high, medium, low or none")
        return None if v is None or v.lower() == "none" else v.lower()


class AdmissionConfig(AdmissionRules):
    """``[admission]``: the Kubernetes admission webhook's policy (hallmark.admission).

    With no configuration: enforce; every image must resolve in Hallmark and be approved
    (deprecated allowed with a warning); no signature, grade or severity requirement.
    """

    mode: str | None = "enforce"
    allowed_registries: list[str] | None = []
    exempt_images: list[str] | None = []
    require_signature: bool | None = False
    exempt_namespaces: list[str] = []  # names or globs: never evaluated
    failure_policy: str = "fail"  # fail (deny) | ignore (allow, with a warning) when a review cannot be evaluated
    timeout_seconds: float = Field(default=2.0, gt=0, le=30)  # evaluation budget of one review
    max_request_bytes: int = Field(default=6 << 20, ge=64 << 10, le=64 << 20)  # AdmissionReview body
    cache_size: int = Field(default=10_000, ge=0, le=1_000_000)  # cached (digest, policy) decisions
    namespaces: dict[str, AdmissionRules] = {}  # per-namespace overrides (names or globs)
    # Client networks (CIDRs) allowed to call the webhooks, e.g. the API servers' or the pod
    # network; empty: any. Others get 403 with nothing evaluated, stored or audited.
    allowed_networks: list[str] = []

    _ns = field_validator("exempt_namespaces", "allowed_networks", mode="before")(_str_list)

    @field_validator("allowed_networks")
    @classmethod
    def _check_networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"allowed_networks: {net!r} is not an IP address or CIDR") from None
        return v

    @field_validator("failure_policy")
    @classmethod
    def _check_failure_policy(cls, v: str) -> str:
        if v.lower() not in ("fail", "ignore"):
            raise ValueError("failure_policy must be fail or ignore")
        return v.lower()


def _group_map(v: Any) -> Any:
    """``{group: [teams]}``; a value may be one comma-separated string (from the environment)."""
    if isinstance(v, dict):
        return {
            str(k).lower(): [x.strip() for x in val.split(",") if x.strip()] if isinstance(val, str) else val
            for k, val in v.items()
        }
    return v


class LdapConfig(Section):
    """LDAP bind authentication (``[access.ldap]``); on when ``url`` is set. See docs/access.md."""

    url: str | None = None  # ldap://host:389 or ldaps://host:636
    start_tls: bool = False
    ca_file: str | None = None  # PEM bundle to verify the server certificate (system store otherwise)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Either bind directly as a DN built from the user name ...
    user_dn_template: str | None = None  # e.g. "uid={username},ou=people,dc=example,dc=com"
    # ... or search for it with a service account.
    bind_dn: str | None = None
    bind_password: str | None = None
    bind_password_file: str | None = None
    user_base_dn: str | None = None
    user_filter: str = "(uid={username})"
    # Groups of the user: {dn} and {username} are escaped before substitution.
    group_base_dn: str | None = None
    group_filter: str = "(|(member={dn})(uniqueMember={dn})(memberUid={username}))"
    group_name_attribute: str = "cn"
    # LDAP group name (case-insensitive) -> Hallmark teams / catalog roles, re-synced at every login.
    group_teams: dict[str, list[str]] = {}
    group_roles: dict[str, list[str]] = {}
    # Seconds a successful bind is remembered per (user, password); 0 binds on every request.
    cache_seconds: int = Field(default=60, ge=0, le=3600)

    _maps = field_validator("group_teams", "group_roles", mode="before")(_group_map)


class OidcConfig(Section):
    """OpenID Connect login for the portal (``[access.oidc]``); on when ``issuer`` is set."""

    issuer: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    client_secret_file: str | None = None
    # Default: <public_url or request base>/auth/oidc/callback.
    redirect_uri: str | None = None
    scopes: list[str] = ["openid", "profile", "email"]
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    algorithms: list[str] = ["RS256", "ES256", "PS256"]
    group_teams: dict[str, list[str]] = {}
    group_roles: dict[str, list[str]] = {}
    session_lifetime_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    # Secure cookies need https; turn off only for a plain-http localhost portal.
    cookie_secure: bool = True
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    _maps = field_validator("group_teams", "group_roles", mode="before")(_group_map)

    @field_validator("algorithms")
    @classmethod
    def _check_algs(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a[:2] not in ("RS", "ES", "PS", "Ed")]
        if bad or not v:
            raise ValueError(f"only asymmetric algorithms are accepted, not {bad}")
        return v


class AccessConfig(Section):
    """Authentication, authorization and audit (``[access]``); on by default: no anonymous push."""

    enabled: bool = True
    # Docker token service name (the JWT audience) and issuer.
    service: str = "hallmark"
    # Token endpoint URL given in WWW-Authenticate; default <public_url or request base>/auth/token.
    realm: str | None = None
    token_lifetime_seconds: int = Field(default=300, ge=30, le=24 * 3600)
    # Whether repositories without an explicit setting allow anonymous pull.
    anonymous_pull_default: bool = False
    # Accept HTTP Basic credentials directly on /v2 (for clients without token support).
    basic_on_registry: bool = True
    # Failed logins: this many per (client address, user) pair, then 429 with a back-off growing from 5 s
    # up to the window; and at most max_failed_per_address per client address within the window.
    max_failed_per_user: int = Field(default=5, ge=1)
    max_failed_per_address: int = Field(default=30, ge=1)
    failed_window_seconds: int = Field(default=300, ge=1)
    # Audit entries older than this are pruned (a checkpoint keeps the chain verifiable); 0 keeps all.
    audit_retention_days: int = Field(default=0, ge=0)
    audit_flush_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    # Tokens (sessions included) that expired or were revoked longer ago than this are deleted by the
    # daily tokens.prune job (audited); 0 keeps them all.
    token_prune_after_days: int = Field(default=30, ge=0)
    ldap: LdapConfig = LdapConfig()
    oidc: OidcConfig = OidcConfig()


class ProxyConfig(Section):
    """One pull-through cache (``[[mirror.proxy]]``): misses under ``namespace/`` come from ``upstream``."""

    namespace: str  # first path segment of the local repositories, e.g. "hub"
    upstream: str  # registry base URL, e.g. "https://registry-1.docker.io"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)  # a secret: never logged nor in API answers
    password_file: str | None = None  # or read from this file at start (a mounted secret)
    repositories: list[str] = []  # allow-list of upstream repository globs ("library/*"); empty: all
    tag_ttl_seconds: int = Field(default=300, ge=0)  # a cached tag is re-checked upstream after this
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    insecure: bool = False  # allow an http:// upstream and skip TLS certificate checks (local mirrors, tests)

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", v):
            raise ValueError(f"namespace must be one lowercase path segment, got {v!r}")
        return v

    @field_validator("upstream")
    @classmethod
    def _check_upstream(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")) or len(v.split("://", 1)[1].strip("/")) == 0:
            raise ValueError(f"upstream must be an http(s) URL, got {v!r}")
        if "@" in v.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("upstream must not hold credentials: use username and password")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _check_plain_http(self) -> ProxyConfig:
        if self.upstream.startswith("http://") and not self.insecure:
            raise ValueError(f"upstream {self.upstream} is plain HTTP: set insecure = true to allow it")
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("give password or password_file, not both")
            try:
                self.password = Path(self.password_file).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"password_file {self.password_file}: {exc.strerror or exc}") from exc
        return self


class MirrorConfig(Section):
    """Acquisition from other registries (``[mirror]``): pull-through caches."""

    proxy: list[ProxyConfig] = []

    @model_validator(mode="after")
    def _unique(self) -> MirrorConfig:
        names = [p.namespace for p in self.proxy]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"proxy namespace(s) configured twice: {', '.join(dup)}")
        return self
