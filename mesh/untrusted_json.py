"""JSON from outside (callers, models, remote tools): parsed without crashing on depth.

``json.loads`` raises ``RecursionError``, not ``ValueError``, for input nested
a few thousand levels deep; a hostile caller or model could use that to turn
a bad request into an internal error. Here it is a ``JSONDecodeError`` like
any other malformed input.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", str(text[:100]), 0) from None
