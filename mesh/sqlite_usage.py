"""How much of an SQLite file holds data, for stores that keep within a size."""

from __future__ import annotations

import sqlite3

__all__ = ["used_bytes"]


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes in pages holding data: pages freed by deletes are reused before the file grows,
    so this, not the file's size, says whether there is room."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)
