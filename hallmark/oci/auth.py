"""Registry credentials from the files users already have (``podman login``, ``skopeo login``,
``docker login``), so ``hallmark scan``/``sbom`` read a private image without retyping them.

Files are read in the order containers-auth.json(5) and docker define; the first that holds an
entry for the registry wins:

1. ``$REGISTRY_AUTH_FILE``
2. ``$XDG_RUNTIME_DIR/containers/auth.json``
3. ``~/.config/containers/auth.json``
4. ``~/.docker/config.json`` (or ``$DOCKER_CONFIG/config.json``)

An entry is ``{"auth": base64("user:pass")}`` or ``{"username": ..., "password": ...}``; keys
may be a host, a URL (``https://host/v1/``) or, for podman, ``host/namespace[/repo]`` (the most
specific key matching the repository wins). Docker credential helpers (``credHelpers``,
``credsStore``) run external programs that hold the secret: they are not run, and the hint
says so instead of failing with a bare 401. Secrets never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


class CredentialsError(Exception):
    """A credentials file or option cannot be used (the message names the file, never the secret)."""


@dataclass(frozen=True)
class Found:
    """Credentials for one registry (``credentials`` None when only a hint was found) and where they came from."""

    credentials: tuple[str, str] | None
    source: str
    hint: str | None = None


def auth_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The credential files to look in, in order (missing files included; callers skip them)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    out: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    out.append(config_home / "containers" / "auth.json")
    docker_dir = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    out.append(docker_dir / "config.json")
    return out


def _normalise_key(key: str) -> str:
    """``https://host/v1/`` -> ``host``; ``host/ns/repo`` stays a path below the host."""
    k = key.strip()
    for prefix in ("https://", "http://"):
        if k.startswith(prefix):
            k = k[len(prefix) :]
            k = k.split("/", 1)[0]  # a URL key names the whole registry (docker writes /v1/ paths)
            break
    return k.rstrip("/")


def _host_aliases(host: str) -> set[str]:
    if host in DOCKER_HUB_KEYS:
        return {"index.docker.io", "docker.io", "registry-1.docker.io"}
    return {host}


def _decode(entry: object, path: Path, key: str) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        raise CredentialsError(f"{path}: entry {key!r} is not an object")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialsError(
                f"{path}: entry {key!r} has an auth value that is not base64 of user:password"
            ) from exc
        if not sep or not user:
            raise CredentialsError(f"{path}: entry {key!r} has an auth value that is not base64 of user:password")
        return user, password
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and name and isinstance(secret, str):
        return name, secret
    return None  # e.g. an empty entry next to a credsStore, or an OAuth identitytoken (not supported)


def _lookup(doc: dict[str, object], path: Path, host: str, repository: str) -> Found | None:
    aliases = _host_aliases(host)
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        raise CredentialsError(f"{path}: 'auths' is not an object")
    best: tuple[int, str, object] | None = None
    for key, entry in auths.items():
        k = _normalise_key(str(key))
        k_host, _, k_path = k.partition("/")
        if k_host not in aliases:
            continue
        if k_path and not (repository == k_path or repository.startswith(k_path + "/")):
            continue
        rank = len(k_path) + (1 if k_path else 0)
        if best is None or rank > best[0]:
            best = (rank, str(key), entry)
    if best is not None:
        creds = _decode(best[2], path, best[1])
        if creds is not None:
            return Found(creds, f"{path} ({best[1]})")
    helpers = doc.get("credHelpers") or {}
    helper = None
    if isinstance(helpers, dict):
        helper = next((str(v) for k, v in helpers.items() if _normalise_key(str(k)) in aliases), None)
    store = doc.get("credsStore")
    name = helper or (str(store) if isinstance(store, str) and store else None)
    if name:
        return Found(
            None,
            str(path),
            f"{path} keeps the credentials for {host} in the docker credential helper "
            f"'docker-credential-{name}', which Hallmark does not run; use --creds USER[:PASS] or "
            "-u USER --password-stdin",
        )
    return None


def find_credentials(host: str, repository: str = "", environ: Mapping[str, str] | None = None) -> Found | None:
    """Credentials for ``host`` (and ``repository``) from the first credentials file that has them."""
    hint: Found | None = None
    for path in auth_files(environ):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CredentialsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise CredentialsError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise CredentialsError(f"{path}: not a JSON object")
        found = _lookup(doc, path, host, repository)
        if found is None:
            continue
        if found.credentials is not None:
            return found
        hint = hint or found
    return hint
