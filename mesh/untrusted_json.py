"""JSON from outside (callers, models, remote tools): parsed without crashing on depth.

``json.loads`` raises ``RecursionError``, not ``ValueError``, for input nested
a few thousand levels deep; a hostile caller or model could use that to turn
a bad request into an internal error. Here it is a ``JSONDecodeError`` like
any other malformed input, and so is anything nested deeper than
``MAX_DEPTH`` levels: no tool argument or result needs more, and code that
walks the value recursively (validation, conversion, logging) then never
comes near the interpreter's recursion limit.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "loads"]

MAX_DEPTH = 64


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    try:
        value = json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", str(text[:100]), 0) from None
    if _depth_over(value, max_depth):
        raise json.JSONDecodeError(f"nested too deeply (over {max_depth} levels)", "", 0)
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iteratively: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
