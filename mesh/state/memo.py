"""``PostgresMemoStore``: the memo's entries in the shared state database.

Every replica of every agent reads and writes the same entries, so the cap
is the database's to keep: each namespace holds at most ``max_bytes`` (its
keys and values, UTF-8), counted exactly in a usage row
(``mesh_memo_usage``) that each write updates in its own transaction. A
write that would take the namespace past its cap is refused, and nothing is
dropped to make room; an overwrite that does not grow it is always taken.

Writers of one namespace take turns on its usage row (``FOR UPDATE``, taken
first by every write, so that two writers never wait on each other in
opposite orders): the size a write reads is the size it changes, whatever
other processes do. A write is acknowledged once committed, and PostgreSQL
commits durably (``synchronous_commit``), so it survives a crash of the
service and of the server.
"""

from __future__ import annotations

from mesh.state.database import Database
from mesh.state.usage import lock_usage

__all__ = ["PostgresMemoStore"]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""The tool passes its own cap (``mesh.tools.memo.MAX_MEMO_BYTES``); this is for others."""


def entry_bytes(key: str, encoded: str) -> int:
    """What an entry counts against its namespace's cap."""
    return len(key.encode()) + len(encoded.encode())


class PostgresMemoStore:
    """The ``MemoStore`` of a process whose state is in PostgreSQL (see the module)."""

    def __init__(self, database: Database, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.database = database
        self.max_bytes = max_bytes

    def put(self, namespace: str, key: str, encoded: str) -> bool:
        if "\x00" in key:  # PostgreSQL's text cannot hold it: say so rather than fail obscurely
            raise ValueError("key contains a NUL character, which the state database cannot keep")
        size = entry_bytes(key, encoded)
        with self.database.transaction() as db:
            used = lock_usage(db, "mesh_memo_usage", "namespace", namespace)
            row = db.execute(
                "SELECT bytes FROM mesh_memo WHERE namespace = %s AND key = %s", (namespace, key)
            ).fetchone()
            growth = size - (0 if row is None else int(row[0]))
            if growth > 0 and used + growth > self.max_bytes:
                return False
            db.execute(
                "INSERT INTO mesh_memo (namespace, key, value, bytes) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (namespace, key)"
                " DO UPDATE SET value = excluded.value, bytes = excluded.bytes",
                (namespace, key, encoded, size),
            )
            db.execute(
                "UPDATE mesh_memo_usage SET bytes = bytes + %s WHERE namespace = %s",
                (growth, namespace),
            )
        return True

    def get(self, namespace: str, key: str) -> str | None:
        if "\x00" in key:
            return None
        row = self.database.fetch_one(
            "SELECT value FROM mesh_memo WHERE namespace = %s AND key = %s", (namespace, key)
        )
        return None if row is None else str(row[0])

    def keys(self, namespace: str) -> list[str]:
        rows = self.database.fetch_all(
            "SELECT key FROM mesh_memo WHERE namespace = %s ORDER BY key", (namespace,)
        )
        return [str(key) for (key,) in rows]

    def delete(self, namespace: str, key: str) -> bool:
        if "\x00" in key:
            return False
        with self.database.transaction() as db:
            lock_usage(db, "mesh_memo_usage", "namespace", namespace)
            row = db.execute(
                "DELETE FROM mesh_memo WHERE namespace = %s AND key = %s RETURNING bytes",
                (namespace, key),
            ).fetchone()
            if row is None:
                return False
            db.execute(
                "UPDATE mesh_memo_usage SET bytes = bytes - %s WHERE namespace = %s",
                (int(row[0]), namespace),
            )
        return True
