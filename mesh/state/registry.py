"""The process's state database: chosen once, opened on first use, shared by its stores.

``mesh serve`` calls ``use_state`` with the config's setting before it builds
the agent, so that the memo tool, the run ledger, sessions and the rest all
find the same database through ``state_database()``; without it, a process
(``serve()`` from Python, say) follows ``$MESH_STATE_DSN``. None means the
embedded default: each store keeps its own SQLite file.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from mesh.state.setting import resolve_state

if TYPE_CHECKING:  # imported when a DSN is set: embedded state never loads the driver
    from mesh.state.database import Database
    from mesh.state.notifications import Notifications

__all__ = ["close_state", "state_database", "state_notifications", "use_state"]

_lock = threading.Lock()
_dsn: str | None = None
"""None until chosen: then "" (embedded) or a DSN."""
_database: Database | None = None
_notifications: Notifications | None = None


def use_state(configured: str = "") -> str:
    """Choose this process's state (``$MESH_STATE_DSN`` wins over ``configured``); the DSN,
    or "" for embedded files. Refuses a malformed DSN (ConfigError)."""
    global _dsn
    dsn = resolve_state(configured)
    with _lock:
        if _database is not None and dsn != _dsn:
            raise RuntimeError("the state database is already open with another DSN")
        _dsn = dsn
    return dsn


def state_database() -> Database | None:
    """The shared database, opened (and migrated) on first use; None for embedded state."""
    global _database
    if _dsn is None:
        use_state()
    with _lock:
        if not _dsn:
            return None
        if _database is None:
            from mesh.state.database import Database

            _database = Database(_dsn).open()
        return _database


def state_notifications() -> Notifications | None:
    """The process's listener on the shared database (None for embedded state)."""
    global _notifications
    database = state_database()
    if database is None:
        return None
    with _lock:
        if _notifications is None:
            from mesh.state.notifications import Notifications

            _notifications = Notifications(database)
        return _notifications


def close_state() -> None:
    """Close the listener and the pool (at the end of ``serve``); the next use reopens."""
    global _database, _notifications, _dsn
    with _lock:
        if _notifications is not None:
            _notifications.close()
        if _database is not None:
            _database.close()
        _database = _notifications = _dsn = None
