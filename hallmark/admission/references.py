"""Container image references as the container runtime reads them (Docker's normalisation).

``nginx`` is ``docker.io/library/nginx:latest``; the first path component is a registry host
only when it contains a ``.`` or a ``:`` or is ``localhost`` (so ``team/app`` is on Docker Hub);
``index.docker.io`` is ``docker.io``. A reference may carry a tag, a digest or both; with both,
runtimes pull by the digest. Anything the runtime would refuse is refused here with the reason,
so a denial never says "not approved" about a string that is not an image reference at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "docker.io"
DEFAULT_TAG = "latest"
MAX_REFERENCE = 4096
MAX_NAME = 255  # repository path, as the distribution spec limits it

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_HOST = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?\Z"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\Z")


class InvalidReference(ValueError):
    """Not an image reference; the message says why."""


@dataclass(frozen=True)
class ImageRef:
    """One parsed reference; ``host`` lower-cased, ``path`` the repository inside the registry."""

    raw: str
    host: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``host/path``: the repository as a normalised name."""
        return f"{self.host}/{self.path}"

    @property
    def normalized(self) -> str:
        """The full normalised reference (``docker.io/library/nginx:latest``)."""
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        elif not self.digest:
            out += f":{DEFAULT_TAG}"
        return out + (f"@{self.digest}" if self.digest else "")

    @property
    def effective_tag(self) -> str:
        return self.tag or DEFAULT_TAG

    def written_name(self) -> str:
        """The repository part as written (no tag or digest), to pin without changing the host."""
        rest = self.raw.split("@", 1)[0]
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        return rest[:colon] if colon > slash else rest

    def pinned(self, digest: str) -> str:
        """``name@digest`` as written: kubelet, containerd and CRI-O all pull this form."""
        return f"{self.written_name()}@{digest}"


def parse_reference(raw: object) -> ImageRef:
    """Parse ``raw`` like the runtime does; raises :class:`InvalidReference` with the reason."""
    if not isinstance(raw, str):
        raise InvalidReference("the image is not a string")
    if not raw:
        raise InvalidReference("the image is empty")
    if len(raw) > MAX_REFERENCE:
        raise InvalidReference(f"the image reference is longer than {MAX_REFERENCE} characters")
    if raw != raw.strip() or any(c.isspace() or ord(c) < 32 for c in raw):
        raise InvalidReference("the image reference contains white space or control characters")
    rest, digest = raw, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidReference(f"{digest!r} is not a digest (sha256:<64 hex> or sha512:<128 hex>)")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference(f"{tag!r} is not a valid tag")
    if not rest:
        raise InvalidReference("the image reference names no repository")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        host, path = first, remainder
        if not _HOST.match(host):
            raise InvalidReference(f"{host!r} is not a registry host name")
        host = host.lower()
    else:
        host, path = DEFAULT_HOST, rest
    if host == "index.docker.io":
        host = DEFAULT_HOST
    if host == DEFAULT_HOST and "/" not in path:
        path = f"library/{path}"
    parts = path.split("/")
    for part in parts:
        if not _COMPONENT.match(part):
            why = "upper-case letters" if part != part.lower() else "characters a repository name may not have"
            raise InvalidReference(f"repository component {part!r} is empty or has {why}")
    if len(path) > MAX_NAME:
        raise InvalidReference(f"the repository name is longer than {MAX_NAME} characters")
    return ImageRef(raw, host, path, tag, digest)
