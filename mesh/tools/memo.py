"""``MemoTool``: a durable key-value memory that agents read and write.

Backed by SQLite (WAL, synchronous writes) so that what an agent was told
to remember survives a restart of its process, and several runs writing at
once neither corrupt nor lose entries. Values are stored as JSON.

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
from typing import Any

from mesh.errors import ToolExecutionError
from mesh.paths import data_path
from mesh.sqlite_usage import used_bytes
from mesh.tools.base import Tool

__all__ = ["MemoTool", "default_memo_path"]

MAX_KEY_CHARS = 256
MAX_VALUE_BYTES = 64 * 1024
MAX_MEMO_BYTES = 16 * 1024 * 1024


def default_memo_path() -> Path:
    """``$MESH_MEMO_PATH``, else the user's data directory."""
    return data_path("MESH_MEMO_PATH", "memo.sqlite3")


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

    def __init__(self, path: str | os.PathLike[str] | None = None, namespace: str = "default"):
        self.path = Path(path) if path is not None else default_memo_path()
        self.namespace = namespace
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS memo (namespace TEXT NOT NULL, key TEXT NOT NULL,"
                " value TEXT NOT NULL, PRIMARY KEY (namespace, key))"
            )
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
        with closing(self._connect()) as db, db:
            if used_bytes(db) > MAX_MEMO_BYTES:
                raise ToolExecutionError(f"memo is full ({MAX_MEMO_BYTES // 2**20} MB): delete "
                                         "keys that are no longer needed first")  # fmt: skip
            db.execute(
                "INSERT INTO memo VALUES (?, ?, ?) ON CONFLICT(namespace, key) "
                "DO UPDATE SET value = excluded.value",
                (self.namespace, key, encoded),
            )
        return f"stored {key!r}"

    def get(self, key: str) -> Any:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT value FROM memo WHERE namespace = ? AND key = ?", (self.namespace, key)
            ).fetchone()
        if row is None:
            raise ToolExecutionError(f"memo has no entry {key!r}; known keys: {self.keys()}")
        return json.loads(row[0])

    def keys(self) -> list[str]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT key FROM memo WHERE namespace = ? ORDER BY key", (self.namespace,)
            ).fetchall()
        return [row[0] for row in rows]

    def delete(self, key: str) -> str:
        with closing(self._connect()) as db, db:
            deleted = db.execute(
                "DELETE FROM memo WHERE namespace = ? AND key = ?", (self.namespace, key)
            ).rowcount
        return f"deleted {key!r}" if deleted else f"memo had no entry {key!r}"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA synchronous=FULL")
        return db
