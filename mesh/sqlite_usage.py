"""SQLite files that keep within a size: how they are opened, and how much holds data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["open_bounded", "used_bytes"]


def open_bounded(path: Path, max_bytes: int) -> sqlite3.Connection:
    """A connection for a store whose writes must survive a crash (WAL, synchronous=FULL),
    and whose write-ahead log is checkpointed, and cut back, at a quarter of ``max_bytes``.
    Callers hold their own lock: the connection is shared by threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10, check_same_thread=False)
    with db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA wal_autocheckpoint={max(8, max_bytes // 4 // page)}")
        db.execute(f"PRAGMA journal_size_limit={max_bytes // 4}")
    return db


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes in pages holding data: pages freed by deletes are reused before the file grows,
    so this, not the file's size, says whether there is room."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)
