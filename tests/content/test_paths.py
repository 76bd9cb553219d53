"""``normalize_path``'s shortcut for paths already in reported form gives what the full rule gives."""

from __future__ import annotations

import posixpath

from hypothesis import given, settings
from hypothesis import strategies as st

from hallmark.content.scanner import normalize_path
from hallmark.index.names import display


def _full_rule(path: str) -> str:
    path = display(path)
    while path.startswith("./"):
        path = path[2:]
    return posixpath.normpath("/" + path.lstrip("/"))


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\x é\udcff\ud800")), max_size=14))
def test_shortcut_agrees_with_the_full_rule(path: str) -> None:
    assert normalize_path(path) == _full_rule(path)


def test_examples() -> None:
    assert normalize_path("etc/passwd") == "/etc/passwd"
    assert normalize_path("/etc/passwd") == "/etc/passwd"
    assert normalize_path("./etc//x/../y/") == "/etc/y"
    assert normalize_path("") == "/"
    assert normalize_path(".bashrc") == "/.bashrc"
    assert normalize_path("caf\udce9") == "/caf\\xe9"
