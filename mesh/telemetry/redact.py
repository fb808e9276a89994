"""Keeping secrets and bulk out of logs and spans.

Known secret shapes (API keys, bearer tokens, cloud access keys) are replaced
wherever text is recorded, and how much prompt and output text is kept at
all is a setting: ``full``, ``truncated`` (the default) or ``off``.
"""

from __future__ import annotations

import os
import re

__all__ = ["CONTENT_MODES", "content_mode", "redact", "shape"]

CONTENT_MODES = ("full", "truncated", "off")
TRUNCATE_AT = 4000

_SECRETS = re.compile(
    r"(?:sk|pk|rk)-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}"  # OpenAI, Anthropic and similar keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{12,}=*"  # Authorization: Bearer ...
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API keys
)


def redact(text: str) -> str:
    return _SECRETS.sub("[REDACTED]", text)


def content_mode() -> str:
    mode = os.environ.get("MESH_LOG_CONTENT", "truncated")
    return mode if mode in CONTENT_MODES else "truncated"


def shape(text: str | None, mode: str | None = None) -> str | None:
    """``text`` as the content setting allows, secrets redacted."""
    mode = mode or content_mode()
    if text is None or mode == "off":
        return None
    text = redact(text)
    if mode == "truncated" and len(text) > TRUNCATE_AT:
        return text[:TRUNCATE_AT] + f"... [{len(text) - TRUNCATE_AT} more characters]"
    return text
