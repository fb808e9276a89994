"""``PostgresToolChangeLog``: an agent's tool change log in the shared state database.

The same log as the file one (``ToolChangeLog``), kept in ``mesh_tool_changes``
(one row per change, namespaced by agent, ordered by id) so that every replica
of the agent reads and writes one log: a restarted or new replica restores the
same tools, and ``ToolHistory`` is the same on each. A run-time change is
committed, and announced on the agent's channel in the same transaction,
before it applies; the other replicas follow the channel (``ToolAdmin.follow``)
and read the changes after the last one they applied.

Reading "after the last one" is only safe if ids become visible in order:
with concurrent inserts, id 11 could commit before id 10, a follower would read
past 10 and never see it. So appends of one agent take a transaction-scoped
advisory lock first, which makes their ids commit in the order they are drawn.

What a caller can write: a definition arrives in one request, so at most the
mesh's message size (8 MiB); the number of changes is not bounded, as in the
file log (admins only, and start-up records only when the definition changed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields

from mesh.rpc.tool_admin import RUNTIME_ACTIONS
from mesh.rpc.tool_change import ToolChange
from mesh.state.database import Database
from mesh.state.notifications import notify
from mesh.state.setting import redacted

__all__ = ["PostgresToolChangeLog", "tool_changes_channel"]

LOCK_CLASS = 0x746F6F6C  # "tool": the first key of the per-agent advisory locks (two-key space)
START_LOCK_CLASS = 0x73746172  # "star": the agent's start-up record, one replica at a time
_FIELDS = frozenset(f.name for f in fields(ToolChange))


def tool_changes_channel(agent: str) -> str:
    """The agent's notification channel: a fixed-length name (PostgreSQL's are at most
    63 bytes, and an agent's name is not)."""
    return "mesh_tools_" + hashlib.sha256(agent.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class PostgresToolChangeLog:
    """One agent's rows of ``mesh_tool_changes``; positions are their ids."""

    def __init__(self, database: Database, agent: str) -> None:
        self.database = database
        self.agent = agent
        self.channel = tool_changes_channel(agent)
        self.where = f"{redacted(database.dsn)} (the tool changes of {agent})"

    def append(self, change: ToolChange) -> int:
        """Commit ``change`` (and announce a run-time one); StateUnavailableError if the
        database is away, and then nothing was recorded, or nothing the caller was told of."""
        if change.agent != self.agent:
            raise ValueError(f"a change of {change.agent!r} in the log of {self.agent!r}")
        # ensure_ascii: any string, lone surrogates and NUL included, becomes text PostgreSQL
        # takes; allow_nan: a NaN default is legal JSON to the file log, so to this one.
        record = json.dumps(asdict(change), ensure_ascii=True)
        with self.database.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, self.agent))
            row = db.execute(
                "INSERT INTO mesh_tool_changes (agent, action, record) VALUES (%s, %s, %s)"
                " RETURNING id",
                (self.agent, change.action, record),
            ).fetchone()
            assert row is not None
            position = int(str(row[0]))
            if change.action in RUNTIME_ACTIONS:
                notify(db, self.channel, str(position))
        return position

    def read(self) -> list[ToolChange]:
        return [change for _, change in self.read_after(0)]

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One replica of the agent at a time: a transaction holding the agent's start-up
        lock (released with it, and by PostgreSQL if this process dies)."""
        with self.database.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                       (START_LOCK_CLASS, self.agent))  # fmt: skip
            yield

    def read_after(self, position: int) -> list[tuple[int, ToolChange]]:
        with self.database.transaction() as db:
            rows = db.execute(
                "SELECT id, record FROM mesh_tool_changes WHERE agent = %s AND id > %s ORDER BY id",
                (self.agent, position),
            ).fetchall()
        changes = []
        for id_, record in rows:
            if (change := _change(str(record))) is not None:
                changes.append((int(str(id_)), change))
        return changes


def _change(record: str) -> ToolChange | None:
    """The row's change; fields a newer smolmesh added are left out, not the change."""
    try:
        value = json.loads(record)
        return ToolChange(**{k: v for k, v in value.items() if k in _FIELDS})
    except (ValueError, TypeError, AttributeError):
        return None
