"""Cutting text down to size for one-line displays and error messages."""

from __future__ import annotations

__all__ = ["clip"]


def clip(text: str, limit: int, *, one_line: bool = False) -> str:
    """At most ``limit`` characters, ending in "..." when shortened."""
    if one_line:
        text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."
