"""Image references as Kubernetes writes them: ``spec.containers[].image`` and ``status.*.imageID``.

Pure string handling, no I/O: which registry host and repository a reference names (Docker's
defaults: ``nginx`` is ``docker.io/library/nginx``), its tag and digest, and the digest a
container runtime reports (``docker-pullable://host/repo@sha256:...``, ``host/repo@sha256:...``
or ``sha256:...`` alone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DOCKER_HUB = "docker.io"
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOST_RE = re.compile(rf"^({_LABEL}(\.{_LABEL})*|\[[0-9a-f:.]+\])(:[0-9]{{1,5}})?$")
_PATH_RE = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
# Runtime prefixes seen in imageID: docker-pullable:// (dockershim), docker://, containerd://, cri-o://
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")


@dataclass(frozen=True)
class ImageRef:
    """One parsed ``image`` field; ``host`` is lowercased, ``repository`` has no host."""

    host: str
    repository: str
    tag: str | None
    digest: str | None


def valid_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


def parse_image(ref: str) -> ImageRef | None:
    """The parts of an image reference, or None when it is not one (empty, spaces, bad digest)."""
    ref = ref.strip()
    if not ref or any(c.isspace() for c in ref) or len(ref) > 1024:
        return None
    name, digest = ref, None
    if "@" in ref:
        name, _, digest = ref.partition("@")
        if not valid_digest(digest):
            return None
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.match(tag):
            return None
    if not name:
        return None
    first, sep, rest = name.partition("/")
    # A first component with a dot or a port, or "localhost", is a registry host (Docker's rule).
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, repository = first.lower(), rest
    else:
        host, repository = DOCKER_HUB, name
    if host == "index.docker.io":
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in repository:
        repository = "library/" + repository
    if not _HOST_RE.match(host) or not _PATH_RE.match(repository):
        return None
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(host, repository, tag, digest)


def digest_of_image_id(image_id: str) -> str | None:
    """The digest in a runtime's ``imageID`` (None when it holds none, e.g. empty while pulling)."""
    value = _SCHEME_RE.sub("", image_id.strip())
    if "@" in value:
        value = value.rpartition("@")[2]
    return value if valid_digest(value) else None


def host_forms(url_or_host: str) -> set[str]:
    """The ``host[:port]`` spellings an image reference may use for a server URL or host."""
    text = url_or_host.strip()
    if not text:
        return set()
    parts = urlsplit(text if "://" in text else "//" + text)
    host = (parts.hostname or "").lower()
    if not host:
        return set()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    forms = {host}
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if port is not None:
        forms = {f"{host}:{port}"} | ({host} if port == default else set())
    elif default is not None:
        forms.add(f"{host}:{default}")
    return forms
