"""Where a served agent keeps its state: files of its own, or the mesh's shared database.

One choice for all of it (``mesh.state``): without a state DSN, the run
ledger and the sessions are SQLite files and the tool changes a JSON-lines
log, per agent, on this machine; run records live in the service's memory.
With one, all of these are rows in PostgreSQL that every replica of the
agent shares, and run records are also written there (``SharedRuns``), so
that any replica can answer for a run another holds. Either way they keep
within the same bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mesh._proto import agent_pb2 as pb
from mesh.data_limit import DataLimit
from mesh.host.run_ledger import Ledger, RunLedger, default_run_ledger_path
from mesh.host.sessions import Sessions, SessionStore, default_sessions_path
from mesh.paths import writable_dir
from mesh.rpc.servicer import ProtoCodec
from mesh.rpc.tool_admin import ChangeLog, ToolChangeLog, default_tool_log_dir
from mesh.state.registry import state_database, state_notifications

if TYPE_CHECKING:
    from mesh.host.shared_runs import SharedRuns

__all__ = ["Stores", "open_stores"]


@dataclass
class Stores:
    ledger: Ledger
    sessions: Sessions
    changes: ChangeLog
    shared: SharedRuns[pb.RunEvent] | None = None
    """Run records every replica can read: with shared state only."""

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()  # what waits is written first
        self.ledger.close()
        self.sessions.close()


def open_stores(agent: str, limit: DataLimit, *, run_retention_s: float,
                run_memory_bytes: int) -> Stores:  # fmt: skip
    """The agent's stores, where the process's state setting says (``use_state``)."""
    database = state_database()
    if database is None:
        return _file_stores(agent, limit)
    # Imported here: a service on files never loads the PostgreSQL driver.
    from mesh.host.postgres_ledger import PostgresRunLedger
    from mesh.host.postgres_sessions import PostgresSessionStore
    from mesh.host.shared_runs import SharedRuns
    from mesh.rpc.postgres_tool_changes import PostgresToolChangeLog

    notifications = state_notifications()
    assert notifications is not None
    return Stores(
        ledger=PostgresRunLedger(database, agent, max_bytes=limit.ledger_bytes),
        sessions=PostgresSessionStore(database, agent, max_bytes=limit.sessions_bytes),
        changes=PostgresToolChangeLog(database, agent),
        shared=SharedRuns(database, notifications, agent, ProtoCodec(),
                          retention_s=run_retention_s, max_bytes=run_memory_bytes),
    )  # fmt: skip


def _file_stores(agent: str, limit: DataLimit) -> Stores:
    """The agent's stores as files on this machine, in directories checked first: one that
    cannot be written stops the service at start-up, naming the variable that moves it."""
    ledger, sessions = default_run_ledger_path(agent), default_sessions_path(agent)
    writable_dir(ledger.parent, "run ledger directory", "MESH_RUNS_DIR")
    writable_dir(sessions.parent, "sessions directory", "MESH_SESSIONS_DIR")
    tool_log = writable_dir(
        default_tool_log_dir(), "tool change log directory", "MESH_TOOL_LOG_DIR"
    )
    return Stores(
        ledger=RunLedger(ledger, max_bytes=limit.ledger_bytes),
        sessions=SessionStore(sessions, max_bytes=limit.sessions_bytes),
        changes=ToolChangeLog(tool_log / f"{agent}.jsonl"),
    )
