"""``PostgresRunLedger``: the run ledger in the shared state database, one for every replica.

Same contract as the SQLite ``RunLedger`` (``mesh.host.run_ledger``), but
the ids are claimed in one table that every replica of an agent shares: a
retried run id is answered from the record, or refused, whichever replica
it reaches. A claim is an ``INSERT ... ON CONFLICT DO NOTHING`` committed
before the run starts, so of two replicas claiming one id at once exactly
one runs it, and a claim, once acknowledged, survives a crash of the
service and of the database server.

Rows are the agent's (``agent`` column). Each counts its bytes (the run id,
error and kept response, plus what a row costs in any case) and the agent's
total is kept exact in ``mesh_run_ledger_usage``, updated in the same
transaction. Writers of one agent take turns on that usage row, locked first
by every write, so that forgetting old runs never waits on a writer that
waits on it. The bounds are ``RunLedger``'s: past three eighths of
``max_bytes`` the oldest finished runs are forgotten down to a quarter (a
running one never is), a response over ``max_bytes / 16`` is not kept,
errors are clipped, and entries older than ``retention_s`` are dropped when
a service starts.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from mesh.host.run_ledger import (
    MAX_ERROR_CHARS,
    MAX_LEDGER_BYTES,
    WEEK_S,
    LedgerEntry,
    kept_response,
    retry_answer,
    task_sha256,
)
from mesh.state.database import Database
from mesh.text import clip

__all__ = ["PostgresRunLedger"]

ROW_OVERHEAD_BYTES = 200
"""What any row costs beyond its run id, error and response: the tuple, its hash and
times, its share of the indexes."""
FORGET_BATCH = 256
_COLUMNS = "run_id, task_sha256, started, finished, error, response, response_bytes"

Connection = psycopg.Connection[tuple[Any, ...]]


def row_bytes(agent: str, run_id: str, error: str | None, response: bytes | None) -> int:
    """What a row counts against its agent's share."""
    return (ROW_OVERHEAD_BYTES + len(agent.encode()) + len(run_id.encode())
            + len((error or "").encode()) + len(response or b""))  # fmt: skip


class PostgresRunLedger:
    """The ``Ledger`` of ``agent`` in ``database`` (see the module)."""

    def __init__(self, database: Database, agent: str, *, retention_s: float = WEEK_S,
                 max_bytes: int = MAX_LEDGER_BYTES) -> None:  # fmt: skip
        self.database = database
        self.agent = agent
        self.max_bytes = max_bytes
        self.max_response_bytes = max_bytes // 16
        with self.database.transaction() as db:
            used = self._lock_usage(db)
            (dropped,) = _one(db.execute(
                "WITH gone AS (DELETE FROM mesh_run_ledger WHERE agent = %s AND started < %s"
                " RETURNING bytes) SELECT coalesce(sum(bytes), 0) FROM gone",
                (agent, time.time() - retention_s),
            ))  # fmt: skip
            self._keep_within_budget(db, used - int(dropped))

    def claim(self, run_id: str, task: str) -> LedgerEntry | None:
        """Record ``run_id`` as started; if it was already recorded, its entry instead."""
        size = row_bytes(self.agent, run_id, None, None)
        with self.database.transaction() as db:
            used = self._lock_usage(db)
            inserted = db.execute(
                "INSERT INTO mesh_run_ledger (agent, run_id, task_sha256, started, bytes)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (self.agent, run_id, task_sha256(task), time.time(), size),
            ).rowcount
            if inserted:
                self._keep_within_budget(db, used + size)
                return None
            row = _one(db.execute(
                f"SELECT {_COLUMNS} FROM mesh_run_ledger WHERE agent = %s AND run_id = %s",
                (self.agent, run_id),
            ))  # fmt: skip
        return LedgerEntry(*row)  # bytea comes back as bytes

    def start(self, run_id: str, task: str, *, unary: bool) -> bytes | None:
        """Claim ``run_id`` for a run of ``task`` about to start: None when it is new (run
        it), the recorded response for a unary retry of a finished run of the same task;
        AlreadyExistsError for any other reuse."""
        prior = self.claim(run_id, task)
        return None if prior is None else retry_answer(prior, task, unary=unary)

    def finish(self, run_id: str, *, error: str | None = None, response: bytes | None = None
               ) -> None:  # fmt: skip
        response, size = kept_response(response, self.max_response_bytes)
        error = None if error is None else clip(error, MAX_ERROR_CHARS)
        new = row_bytes(self.agent, run_id, error, response)
        with self.database.transaction() as db:
            used = self._lock_usage(db)
            row = db.execute(
                "SELECT bytes FROM mesh_run_ledger WHERE agent = %s AND run_id = %s",
                (self.agent, run_id),
            ).fetchone()
            if row is None:  # dropped meanwhile (a service started past its retention)
                return
            db.execute(
                "UPDATE mesh_run_ledger SET finished = %s, error = %s, response = %s,"
                " response_bytes = %s, bytes = %s WHERE agent = %s AND run_id = %s",
                (time.time(), error, response, size, new, self.agent, run_id),
            )
            self._keep_within_budget(db, used + new - int(row[0]))

    def close(self) -> None:
        """Nothing to release: the database is the process's, shared by its stores."""

    def _lock_usage(self, db: Connection) -> int:
        """Take the agent's turn to write (its usage row) for the rest of the transaction;
        the bytes its rows hold."""
        lock = "SELECT bytes FROM mesh_run_ledger_usage WHERE agent = %s FOR UPDATE"
        row = db.execute(lock, (self.agent,)).fetchone()
        if row is None:  # the agent's first write (or two first writes at once)
            db.execute("INSERT INTO mesh_run_ledger_usage (agent, bytes) VALUES (%s, 0)"
                       " ON CONFLICT DO NOTHING", (self.agent,))  # fmt: skip
            row = _one(db.execute(lock, (self.agent,)))
        return int(row[0])

    def _keep_within_budget(self, db: Connection, used: int) -> None:
        """Record ``used`` as the agent's bytes, first forgetting the oldest finished runs,
        down to a quarter of the budget, if it is over three eighths. In a write transaction
        holding the usage row."""
        if used > self.max_bytes * 3 // 8:
            used -= self._forget_oldest(db, used - self.max_bytes // 4)
        db.execute(
            "UPDATE mesh_run_ledger_usage SET bytes = %s WHERE agent = %s", (used, self.agent)
        )

    def _forget_oldest(self, db: Connection, excess: int) -> int:
        """Delete the oldest finished runs that free at least ``excess`` bytes (fewer when
        there are not enough), a batch at a time; the bytes freed."""
        freed = 0
        while freed < excess:
            rows = db.execute(
                "SELECT run_id, bytes FROM mesh_run_ledger WHERE agent = %s"
                " AND finished IS NOT NULL ORDER BY seq LIMIT %s",
                (self.agent, FORGET_BATCH),
            ).fetchall()
            doomed = []
            for run_id, size in rows:
                if freed >= excess:
                    break
                doomed.append(str(run_id))
                freed += int(size)
            if not doomed:
                break
            db.execute(
                "DELETE FROM mesh_run_ledger WHERE agent = %s AND run_id = ANY(%s)",
                (self.agent, doomed),
            )
        return freed


def _one(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    assert row is not None, "a query that returns one row returned none"
    return row
