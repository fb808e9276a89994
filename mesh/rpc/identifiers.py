"""Identifiers a caller gives (run ids, parent run ids), bounded before they are used.

A run id is copied into every audit event, span and ledger row of its run:
an unbounded one lets one request write a multiple of its size to disk many
times over, and strange characters make logs and file names ambiguous. So an
identifier is 1 to 128 characters of letters, digits and ``._:-``, starting
with a letter or digit, or it is refused with INVALID_ARGUMENT before the run
starts (and the refusal never repeats it whole).
"""

from __future__ import annotations

import re

from mesh.errors import InvalidRequestError
from mesh.text import clip

__all__ = ["MAX_ID_CHARS", "check_identifier"]

MAX_ID_CHARS = 128
_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_ID_CHARS - 1}}}")


def check_identifier(value: str, field: str) -> str:
    """``value`` if it is a well-formed identifier (the empty string means none given)."""
    if value and not _ID.fullmatch(value):
        raise InvalidRequestError(
            f"{field} must be 1 to {MAX_ID_CHARS} letters, digits or . _ : - (starting with a "
            f"letter or digit); got {len(value)} characters: {clip(repr(value), 40)}"
        )
    return value
