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
total is kept exact in ``mesh_run_ledger_usage``. A claim and a finish are on
every run's critical path, so each is one statement (one round trip): its
row, then the change in its bytes added to the agent's count. Forgetting
locks the usage row first (one forgetter at a time) and deletes finished
rows only, which no claim or finish is holding: nothing waits in a circle.
The bounds are ``RunLedger``'s: past three eighths of ``max_bytes`` the
oldest finished runs are forgotten down to a quarter (a running one never
is), a response over ``max_bytes / 16`` is not kept, errors are clipped, and
entries older than ``retention_s`` are dropped when a service starts.
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
from mesh.state.usage import lock_usage
from mesh.text import clip

__all__ = ["PostgresRunLedger"]

ROW_OVERHEAD_BYTES = 200
"""What any row costs beyond its run id, error and response: the tuple, its hash and
times, its share of the indexes."""
FORGET_BATCH = 256
USAGE = "mesh_run_ledger_usage"
_COLUMNS = "run_id, task_sha256, started, finished, error, response, response_bytes"

Connection = psycopg.Connection[tuple[Any, ...]]

_CLAIM = b"""
WITH claimed AS (
    INSERT INTO mesh_run_ledger (agent, run_id, task_sha256, started, bytes)
    VALUES (%(agent)s, %(run_id)s, %(task)s, %(started)s, %(bytes)s)
    ON CONFLICT DO NOTHING RETURNING bytes),
counted AS (
    INSERT INTO mesh_run_ledger_usage (agent, bytes) SELECT %(agent)s, bytes FROM claimed
    ON CONFLICT (agent) DO UPDATE SET bytes = mesh_run_ledger_usage.bytes + excluded.bytes
    RETURNING bytes)
SELECT (SELECT bytes FROM counted)"""
"""A claim: the row if the id is new, and its bytes counted; the agent's bytes then (NULL
when the id was claimed before)."""

_FINISH = b"""
WITH finished AS (
    UPDATE mesh_run_ledger l SET finished = %(finished)s, error = %(error)s,
        response = %(response)s, response_bytes = %(size)s, bytes = %(bytes)s
    FROM (SELECT bytes AS before FROM mesh_run_ledger
          WHERE agent = %(agent)s AND run_id = %(run_id)s) o
    WHERE l.agent = %(agent)s AND l.run_id = %(run_id)s
    RETURNING %(bytes)s - o.before AS grown)
UPDATE mesh_run_ledger_usage SET bytes = bytes + (SELECT grown FROM finished)
WHERE agent = %(agent)s AND EXISTS (SELECT 1 FROM finished) RETURNING bytes"""
"""A finish: the row's outcome, and the change in its bytes counted; the agent's bytes then
(no row when the entry was dropped meanwhile)."""


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
            used = lock_usage(db, USAGE, "agent", self.agent)
            (dropped,) = _one(db.execute(
                "WITH gone AS (DELETE FROM mesh_run_ledger WHERE agent = %s AND started < %s"
                " RETURNING bytes) SELECT coalesce(sum(bytes), 0) FROM gone",
                (agent, time.time() - retention_s),
            ))  # fmt: skip
            self._keep_within_budget(db, used - int(dropped))

    def claim(self, run_id: str, task: str) -> LedgerEntry | None:
        """Record ``run_id`` as started; if it was already recorded, its entry instead.
        One statement (the claim is on a run's critical path): the row, and its bytes added
        to the agent's count."""
        size = row_bytes(self.agent, run_id, None, None)
        row = self.database.fetch_one(_CLAIM, {
            "agent": self.agent, "run_id": run_id, "task": task_sha256(task),
            "started": time.time(), "bytes": size})  # fmt: skip
        if row is not None and row[0] is not None:  # claimed: the agent's bytes now
            self._trim_if_over(int(row[0]))
            return None
        found = self.database.fetch_one(
            f"SELECT {_COLUMNS} FROM mesh_run_ledger WHERE agent = %s AND run_id = %s".encode(),
            (self.agent, run_id),
        )  # (read anew: a claim that lost a race may not have seen the winner's row)
        assert found is not None, "a claimed run id has no row"
        return LedgerEntry(*found)  # bytea comes back as bytes

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
        row = self.database.fetch_one(_FINISH, {
            "agent": self.agent, "run_id": run_id, "finished": time.time(), "error": error,
            "response": response, "size": size,
            "bytes": row_bytes(self.agent, run_id, error, response)})  # fmt: skip
        if row is not None and row[0] is not None:  # (no row: dropped meanwhile)
            self._trim_if_over(int(row[0]))

    def close(self) -> None:
        """Nothing to release: the database is the process's, shared by its stores."""

    def _trim_if_over(self, used: int) -> None:
        """Past three eighths of the budget, forget the oldest finished runs (in a
        transaction of its own, holding the usage row: one forgetter at a time)."""
        if used <= self.max_bytes * 3 // 8:
            return
        with self.database.transaction() as db:
            self._keep_within_budget(db, lock_usage(db, USAGE, "agent", self.agent))

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
