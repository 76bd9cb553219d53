"""File names as layers carry them: bytes, not necessarily UTF-8.

Tar names are decoded with ``surrogateescape``, so a name's ``str`` maps back to its exact
bytes (``name.encode("utf-8", "surrogateescape")``) and whiteouts, hardlinks and symlinks match
byte for byte. JSON cannot carry those lone surrogates (orjson refuses them, other parsers
turn them into U+FFFD), hence two encodings:

* :func:`display` / :func:`json_safe` for what users and other tools read (SBOMs, reports,
  warnings): each byte that is not UTF-8 becomes ``\\xNN``, as Python and GNU tools show it;
* :func:`pack_doc` / :func:`unpack_doc` for the index cache, which must give back the exact
  names: a string holding such bytes is stored as NUL + its UTF-16 code units in hex. Tar
  names are C strings, so no real name starts with NUL and the two forms cannot be confused.
"""

from __future__ import annotations

from typing import Any

_MARK = "\x00"


def has_raw_bytes(s: str) -> bool:
    """True when ``s`` holds bytes that were not UTF-8 (lone surrogates from surrogateescape)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def display(s: str) -> str:
    """``s`` with every non-UTF-8 byte shown as ``\\xNN`` (other lone surrogates as ``\\uNNNN``)."""
    if not has_raw_bytes(s):
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte kept by surrogateescape
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:  # a lone surrogate from elsewhere (a JSON "\\ud800" escape)
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def json_safe(doc: Any) -> Any:
    """A copy of a JSON-like document whose strings (keys too) all encode as UTF-8."""
    if isinstance(doc, str):
        return display(doc)
    if isinstance(doc, dict):
        return {json_safe(k) if isinstance(k, str) else k: json_safe(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [json_safe(v) for v in doc]
    return doc


def _pack(s: str) -> str:
    if has_raw_bytes(s) or s.startswith(_MARK):
        return _MARK + s.encode("utf-16-le", "surrogatepass").hex()
    return s


def _unpack(s: str) -> str:
    if s.startswith(_MARK):
        return bytes.fromhex(s[1:]).decode("utf-16-le", "surrogatepass")
    return s


def _walk(doc: Any, fn: Any) -> Any:
    if isinstance(doc, str):
        return fn(doc)
    if isinstance(doc, dict):
        return {fn(k) if isinstance(k, str) else k: _walk(v, fn) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_walk(v, fn) for v in doc]
    return doc


def pack_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A cache document that round-trips names byte for byte through JSON (see :func:`unpack_doc`)."""
    packed: dict[str, Any] = _walk(doc, _pack)
    packed["names_packed"] = True
    return packed


def unpack_doc(doc: dict[str, Any]) -> dict[str, Any]:
    if not doc.pop("names_packed", False):
        return doc
    out: dict[str, Any] = _walk(doc, _unpack)
    return out
