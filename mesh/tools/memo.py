"""``MemoTool``: a durable key-value memory that agents read and write.

What an agent was told to remember survives a restart of its process, and
several runs writing at once neither corrupt nor lose entries. Values are
stored as JSON, through a ``MemoStore``: an embedded SQLite file (WAL,
synchronous writes; ``SqliteMemoStore``, the default) or, when the process's
state is a PostgreSQL database, that database, shared by every replica of
every agent (``mesh.state.memo.PostgresMemoStore``).

Whoever can call the tool (a model, or any caller through ``CallTool``)
decides how much it holds, so it holds at most ``MAX_MEMO_BYTES``: past that
a ``set`` is refused, saying so, until keys are deleted. Nothing is dropped
to make room: what an agent was told to remember is never forgotten behind
its back.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

from mesh.errors import ToolExecutionError
from mesh.paths import data_path, writable_dir
from mesh.sqlite_usage import used_bytes
from mesh.tools.base import Tool

__all__ = ["MemoStore", "MemoTool", "SqliteMemoStore", "default_memo_path"]

MAX_KEY_CHARS = 256
MAX_VALUE_BYTES = 64 * 1024
MAX_MEMO_BYTES = 16 * 1024 * 1024


def default_memo_path() -> Path:
    """``$MESH_MEMO_PATH``, else the user's data directory."""
    return data_path("MESH_MEMO_PATH", "memo.sqlite3")


class MemoStore(Protocol):
    """Where the memo's entries are kept: JSON text under (namespace, key). A write is
    durable when ``put`` returns; each call is atomic, whatever other processes do."""

    @property
    def max_bytes(self) -> int:
        """The size past which ``put`` refuses to grow the memo."""
        ...

    def put(self, namespace: str, key: str, encoded: str) -> bool:
        """Store ``encoded`` under ``key``; False, with nothing written, when the memo is
        full (it is never made room for by forgetting)."""
        ...

    def get(self, namespace: str, key: str) -> str | None: ...

    def keys(self, namespace: str) -> list[str]:
        """Every key of ``namespace``, sorted."""
        ...

    def delete(self, namespace: str, key: str) -> bool:
        """Whether there was an entry to delete."""
        ...


class SqliteMemoStore:
    """One SQLite file, for every namespace; its cap is the file's data, all namespaces
    together (checked before a write, so a write may pass it by one value)."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = MAX_MEMO_BYTES if max_bytes is None else max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS memo (namespace TEXT NOT NULL, key TEXT NOT NULL,"
                " value TEXT NOT NULL, PRIMARY KEY (namespace, key))"
            )

    def put(self, namespace: str, key: str, encoded: str) -> bool:
        with closing(self._connect()) as db, db:
            if used_bytes(db) > self.max_bytes:
                return False
            db.execute(
                "INSERT INTO memo VALUES (?, ?, ?) ON CONFLICT(namespace, key) "
                "DO UPDATE SET value = excluded.value",
                (namespace, key, encoded),
            )
        return True

    def get(self, namespace: str, key: str) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT value FROM memo WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        return None if row is None else str(row[0])

    def keys(self, namespace: str) -> list[str]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT key FROM memo WHERE namespace = ? ORDER BY key", (namespace,)
            ).fetchall()
        return [row[0] for row in rows]

    def delete(self, namespace: str, key: str) -> bool:
        with closing(self._connect()) as db, db:
            deleted = db.execute(
                "DELETE FROM memo WHERE namespace = ? AND key = ?", (namespace, key)
            ).rowcount
        return bool(deleted)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA synchronous=FULL")
        return db


def default_memo_store(path: str | os.PathLike[str] | None = None) -> MemoStore:
    """The file at ``path`` when one is named; else the process's state database when it
    has one (``mesh.state.registry``), else the default file. Imported late: a process on
    SQLite never loads the PostgreSQL driver."""
    if path is None:
        from mesh.state.registry import state_database

        database = state_database()
        if database is not None:
            from mesh.state.memo import PostgresMemoStore

            return PostgresMemoStore(database, max_bytes=MAX_MEMO_BYTES)
        path = default_memo_path()
        writable_dir(path.parent, "memo's directory", "MESH_MEMO_PATH")
    return SqliteMemoStore(path)


class MemoTool(Tool):
    name = "memo"
    description = (
        "Durable memory shared across runs. action='set' stores value under key; "
        "'get' returns the value stored under key; 'list' returns all keys; "
        "'delete' removes key."
    )
    inputs = {
        "action": {
            "type": "string",
            "description": "One of set, get, list, delete.",
            "enum": ["set", "get", "list", "delete"],
        },
        "key": {
            "type": "string",
            "description": "The key (needed by set, get and delete).",
            "nullable": True,
            "default": None,
        },
        "value": {
            "type": "any",
            "description": "The JSON value to store (set only).",
            "nullable": True,
            "default": None,
        },
    }
    output_type = "any"
    untrusted = True
    """What it holds may be a web page's text an agent was told to keep, or a value any
    ``CallTool`` caller wrote, and every agent of the mesh reads the same memo: an
    instruction planted there would reach all of them, run after run. So the model reads its
    results fenced as data; code still gets the values themselves."""

    def __init__(self, path: str | os.PathLike[str] | None = None, namespace: str = "default",
                 *, store: MemoStore | None = None) -> None:  # fmt: skip
        if path is not None and store is not None:
            raise ValueError("MemoTool takes a path or a store, not both")
        self.store = store if store is not None else default_memo_store(path)
        self.path = self.store.path if isinstance(self.store, SqliteMemoStore) else None
        self.namespace = namespace
        super().__init__()

    def forward(self, action: str, key: str | None = None, value: Any = None) -> Any:
        if action == "list":
            return self.keys()
        if not key:
            raise ValueError(f"action {action!r} needs a key")
        if len(key) > MAX_KEY_CHARS:
            raise ValueError(f"key is longer than {MAX_KEY_CHARS} characters")
        if action == "set":
            return self.set(key, value)
        if action == "get":
            return self.get(key)
        return self.delete(key)

    def set(self, key: str, value: Any) -> str:
        encoded = json.dumps(value, ensure_ascii=False)
        if len(encoded.encode()) > MAX_VALUE_BYTES:
            raise ValueError(f"value is larger than {MAX_VALUE_BYTES} bytes once encoded")
        if not self.store.put(self.namespace, key, encoded):
            raise ToolExecutionError(f"memo is full ({self.store.max_bytes // 2**20} MB): "
                                     "delete keys that are no longer needed first")  # fmt: skip
        return f"stored {key!r}"

    def get(self, key: str) -> Any:
        encoded = self.store.get(self.namespace, key)
        if encoded is None:
            raise ToolExecutionError(f"memo has no entry {key!r}; known keys: {self.keys()}")
        return json.loads(encoded)

    def keys(self) -> list[str]:
        return self.store.keys(self.namespace)

    def delete(self, key: str) -> str:
        deleted = self.store.delete(self.namespace, key)
        return f"deleted {key!r}" if deleted else f"memo had no entry {key!r}"
