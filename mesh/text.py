"""Cutting text down to size, the two ways smolmesh needs.

``clip`` is for one-line displays and error messages; ``cut`` is for
content a model or a person reads, where saying how much was dropped
matters.
"""

from __future__ import annotations

__all__ = ["clip", "cut"]


def clip(text: str, limit: int, *, one_line: bool = False) -> str:
    """At most ``limit`` characters, ending in "..." when shortened."""
    if one_line:
        text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def cut(text: str, limit: int) -> str:
    """The first ``limit`` characters, plus a note of how many were dropped."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[output cut: {len(text) - limit} more characters not shown]"
