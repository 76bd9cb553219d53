"""Configuration: defaults < TOML file < ``HALLMARK_*`` environment variables.

Validated once at start so a typo fails loudly with the offending key instead of
being silently ignored. Nested keys use ``__`` in the environment, e.g.
``HALLMARK_REGISTRY__DELETE_ENABLED=false``; the common ones have short aliases
(``HALLMARK_DATA_DIR``, ``HALLMARK_LISTEN``, ``HALLMARK_DATABASE_URL``).

This module loads and merges; the section models live in :mod:`hallmark.config_sections`
and are re-exported here, so ``from hallmark.config import ServerConfig`` keeps working.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hallmark.config_sections import (
    ADMISSION_MODES,
    ADMISSION_SEVERITIES,
    DEFAULT_LISTEN,
    GRADE_LETTERS,
    AccessConfig,
    AdmissionConfig,
    AdmissionRules,
    AdvisoryConfig,
    CatalogConfig,
    DatabaseConfig,
    IndexConfig,
    LdapConfig,
    LifecycleConfig,
    MirrorConfig,
    OidcConfig,
    PipelineConfig,
    ProxyConfig,
    RegistryConfig,
    Section,
    ServerConfig,
    SigningConfig,
    StorageConfig,
    parse_listen,
)

DEFAULT_DATA_DIR = ".hallmark-data"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


# The whole configuration: every section, and the data folder with the paths derived from it.
# (No docstring: it would become the JSON schema's description.)
class Config(Section):
    data_dir: str = DEFAULT_DATA_DIR
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    database: DatabaseConfig = DatabaseConfig()
    registry: RegistryConfig = RegistryConfig()
    access: AccessConfig = AccessConfig()
    pipeline: PipelineConfig = PipelineConfig()
    advisories: AdvisoryConfig = AdvisoryConfig()
    signing: SigningConfig = SigningConfig()
    catalog: CatalogConfig = CatalogConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    index: IndexConfig = IndexConfig()
    admission: AdmissionConfig = AdmissionConfig()
    mirror: MirrorConfig = MirrorConfig()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def blob_path(self) -> Path:
        return Path(self.storage.path).expanduser().resolve() if self.storage.path else self.data_path / "blobs"

    @property
    def rules_path(self) -> Path:
        return (
            Path(self.pipeline.rules_dir).expanduser().resolve()
            if self.pipeline.rules_dir
            else self.data_path / "rules"
        )

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_path / 'hallmark.db'}"


_ALIASES = {
    "HALLMARK_DATA_DIR": ("data_dir",),
    "HALLMARK_LISTEN": ("server", "listen"),
    "HALLMARK_DATABASE_URL": ("database", "url"),
}
_NOT_CONFIG = {"HALLMARK_CONFIG"}


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: {key} is not a section")
        tree = node
    tree[path[-1]] = value


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    overrides: dict[tuple[str, ...], Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Merge file, environment and explicit overrides (CLI flags win) and validate."""
    env = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    config_file = config_file or env.get("HALLMARK_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for name, value in env.items():
        if not name.startswith("HALLMARK_") or name in _NOT_CONFIG or name.startswith("HALLMARK_TEST_"):
            continue
        value_: Any = value
        if value.startswith("[") and value.endswith("]"):
            # Lists come as JSON in the environment: HALLMARK_ADVISORIES__WEBHOOKS='["https://..."]'
            try:
                value_ = json.loads(value)
            except ValueError as exc:
                raise ConfigError(f"{name}: not a valid JSON list") from exc
        if name in _ALIASES:
            _set(tree, _ALIASES[name], value_)
        else:
            parts = tuple(p.lower() for p in name[len("HALLMARK_") :].split("__"))
            _set(tree, parts, value_)
    for path_, value in (overrides or {}).items():
        if value is not None:
            _set(tree, path_, value)
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from exc
    from hallmark.metadata.datafolder import resolve_url  # the data folder's own record of its database

    config.database.url = resolve_url(config.data_path, config.database.url)
    return config


__all__ = [
    "ADMISSION_MODES",
    "ADMISSION_SEVERITIES",
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN",
    "GRADE_LETTERS",
    "AccessConfig",
    "AdmissionConfig",
    "AdmissionRules",
    "AdvisoryConfig",
    "CatalogConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "IndexConfig",
    "LdapConfig",
    "LifecycleConfig",
    "MirrorConfig",
    "OidcConfig",
    "PipelineConfig",
    "ProxyConfig",
    "RegistryConfig",
    "ServerConfig",
    "SigningConfig",
    "StorageConfig",
    "load_config",
    "parse_listen",
]
