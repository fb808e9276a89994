"""The one state setting: where a mesh keeps what its replicas share."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from mesh.errors import ConfigError

__all__ = ["STATE_ENV", "redacted", "resolve_state"]

STATE_ENV = "MESH_STATE_DSN"
SCHEMES = ("postgresql", "postgres")
MAX_DSN_CHARS = 2000


def resolve_state(configured: str = "") -> str:
    """``$MESH_STATE_DSN`` if set, else the config's ``[mesh] state``; "" means embedded
    SQLite. A DSN that is not ``postgresql://`` is refused at start-up, not at first use."""
    dsn = os.environ.get(STATE_ENV, "").strip() or configured.strip()
    if not dsn:
        return ""
    if len(dsn) > MAX_DSN_CHARS:
        raise ConfigError(f"the state DSN is longer than {MAX_DSN_CHARS} characters")
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if scheme not in SCHEMES:
        raise ConfigError(f"state: expected a postgresql:// DSN (or nothing, for SQLite "
                          f"files), got {redacted(dsn)!r}")  # fmt: skip
    return dsn


def redacted(dsn: str) -> str:
    """The DSN without its password (in the user part or the query), for logs and errors."""
    try:
        parts = urlsplit(dsn[:MAX_DSN_CHARS])
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable DSN)"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}{port}"
    query = "&".join("password=***" if item.lower().startswith("password=") else item
                     for item in parts.query.split("&")) if parts.query else ""  # fmt: skip
    return urlunsplit(parts._replace(netloc=netloc, query=query))[:200]
