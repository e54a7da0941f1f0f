"""Bounds checked on raw JSON bytes before any parser sees them: size and nesting depth.

Parsers recurse once per nesting level; a few kilobytes of ``[[[[...`` would otherwise
exhaust the interpreter's recursion limit. Every decoder of untrusted JSON (device payloads
in ``protocol.decoding``, browser frames in the bridge) calls :func:`json_limit_violation`
first.
"""

from __future__ import annotations

import re
from itertools import accumulate

#: Deepest nesting any message of the protocol needs is 3 (a batch of fixes); OwnTracks
#: and browser frames stay well below this.
MAX_JSON_DEPTH = 32

# An unterminated literal runs to the end (the parser reads it as a string too), so every
# match attempt succeeds: linear, not quadratic, on a frame of escaped quotes.
_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonLimitError(ValueError):
    """Raw JSON over a bound; ``code`` is ``too_large`` or ``too_deep``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting outside string literals (an upper bound for text that
    is not JSON, such as an unterminated string)."""
    if data.count(b"[") + data.count(b"{") <= 1:
        return 1 if data.count(b"[") + data.count(b"{") else 0
    brackets = _STRING_LITERAL.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(_STEP[b] for b in brackets)))


def json_limit_violation(
    data: bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH
) -> JsonLimitError | None:
    """The first bound ``data`` breaks, or None. Cheap for the common small message: the
    depth scan runs only when there are more opening brackets than ``max_depth``."""
    if len(data) > max_bytes:
        return JsonLimitError("too_large", f"{len(data)} bytes; the limit is {max_bytes}")
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None
    depth = nesting_depth(data)
    if depth > max_depth:
        return JsonLimitError("too_deep", f"JSON nested {depth} deep; the limit is {max_depth}")
    return None
