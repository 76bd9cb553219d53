"""Repository name, tag and reference grammar from the OCI distribution spec, and the checks that
refuse a bad name or digest with the spec's error code."""

from __future__ import annotations

import re

from hallmark.digest import InvalidDigest, is_digest, parse_digest
from hallmark.registry.errors import RegistryError

NAME_RE = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
# The referrers tag schema (distribution-spec 1.1, "<alg>-<ref>"): sha256 only, as a whole
# sha512 digest does not fit in a tag and the spec's truncated form cannot name one subject.
REFERRERS_TAG_RE = re.compile(r"^sha256-([a-f0-9]{64})$")
MAX_NAME = 255


def valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME and bool(NAME_RE.match(name))


def valid_tag(tag: str) -> bool:
    return bool(TAG_RE.match(tag))


def check_name(name: str) -> None:
    if not valid_name(name):
        raise RegistryError("NAME_INVALID", detail={"name": name})


def check_digest(value: str, code: str = "DIGEST_INVALID") -> str:
    try:
        parse_digest(value)
    except InvalidDigest as exc:
        raise RegistryError(code, message=str(exc)) from exc
    return value


def is_digest_reference(reference: str) -> bool:
    return ":" in reference and is_digest(reference)


def referrers_tag_subject(tag: str) -> str | None:
    """The subject digest that a referrers-schema tag (``sha256-<hex>``) stands for, else None."""
    m = REFERRERS_TAG_RE.match(tag)
    return f"sha256:{m.group(1)}" if m else None


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``repository[:tag][@digest]`` -> (repository, tag, digest), unvalidated; the tag is what follows
    the last ``:`` after the last ``/`` (repository names hold no ``:``)."""
    rest, _, digest = ref.partition("@")
    name, colon, tag = rest.rpartition(":")
    if colon and "/" not in tag:
        return name, tag, digest or None
    return rest, None, digest or None
