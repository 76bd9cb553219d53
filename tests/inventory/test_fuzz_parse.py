"""Property-based: whatever an inventory's items hold, the parser reports and goes on; it raises
only InventoryError, and only for a document that is not a List with items.

Bounded (``max_examples``, no deadline) so the file runs in seconds in CI.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hallmark.inventory.parse import parse_inventory
from hallmark.inventory.refs import digest_of_image_id, parse_image
from tests.inventory.helpers import kubectl_list

FUZZ = settings(max_examples=300, deadline=None)
BASE = kubectl_list()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = [p for p in _paths(BASE["items"]) if p]
BASE_JSON = orjson.dumps(BASE)


def _set(root: Any, path: tuple[Any, ...], value: Any) -> None:
    """Replace the subtree at ``path`` when an earlier change left it there."""
    node = root
    for key in path[:-1]:
        if not isinstance(node, dict | list):
            return
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=6))
def test_replaced_subtrees_never_break_the_parser(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    doc = orjson.loads(BASE_JSON)
    for path, value in changes:
        _set(doc["items"], path, value)
    inv = parse_inventory(doc)
    for w in inv.workloads:
        assert w.images and all(isinstance(i.container, str) for i in w.images)
    for s in inv.skipped:
        assert isinstance(s.reason, str) and s.reason


@FUZZ
@given(st.text(max_size=300))
def test_reference_parsers_take_any_text(text: str) -> None:
    parse_image(text)
    digest_of_image_id(text)
