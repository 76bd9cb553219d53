"""Repository name, tag and reference grammar from the OCI distribution spec."""

from __future__ import annotations

import re

from hallmark.digest import is_digest

NAME_RE = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
MAX_NAME = 255


def valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME and bool(NAME_RE.match(name))


def valid_tag(tag: str) -> bool:
    return bool(TAG_RE.match(tag))


def is_digest_reference(reference: str) -> bool:
    return ":" in reference and is_digest(reference)
