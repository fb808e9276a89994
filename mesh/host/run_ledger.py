"""Run ids chosen by callers are idempotency keys, kept across restarts.

A caller that names its run (``run_id`` on RunRequest or RunStreamRequest)
can retry safely: the id is claimed in a durable ledger (SQLite, WAL,
synchronous=FULL) before the run starts, so the same id never runs twice on
this agent, even when the service was killed and restarted in between. A
retried ``Run`` of a finished run gets the recorded response; any other reuse
(the run is still going, failed, was streamed, or never finished because its
service died) is refused with ALREADY_EXISTS saying what became of it, since
the first attempt may already have had effects (memo writes, delegations).
An id reused for another task is refused too.
Runs without a caller's id are not recorded: nobody can retry them by id.

Callers choose the ids, so callers decide how many entries there are. The
ledger keeps within ``max_bytes`` (its share of the service's data limit),
file and write-ahead log together: the log is checkpointed and cut back at a
quarter of it, and when the file's data passes three eighths, the oldest
finished runs are forgotten until a quarter is left (a retry of a forgotten
id runs again, as one after ``retention_s`` does); a run still going is never
forgotten. A row holds the task's hash, never the task; a response over
``max_bytes / 16`` and an error message over ``MAX_ERROR_CHARS`` are not kept
whole (such a run is still never run again: its entry says why it cannot be
answered). Entries older than ``retention_s`` are dropped when a service
starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mesh.errors import AlreadyExistsError, MeshError
from mesh.paths import data_path
from mesh.sqlite_usage import open_bounded, used_bytes
from mesh.text import clip

__all__ = [
    "Ledger",
    "LedgerEntry",
    "RunLedger",
    "default_run_ledger_path",
    "retry_answer",
    "task_sha256",
]

WEEK_S = 7 * 24 * 3600.0
MAX_LEDGER_BYTES = 16 * 1024 * 1024
MAX_ERROR_CHARS = 1000
_COLUMNS = "run_id, task_sha256, started, finished, error, response, response_bytes"


def default_run_ledger_path(agent: str) -> Path:
    return data_path("MESH_RUNS_DIR", "runs") / f"{agent}.sqlite3"


@dataclass(frozen=True)
class LedgerEntry:
    run_id: str
    task_sha256: str
    started: float
    finished: float | None
    error: str | None
    response: bytes | None
    """The serialized RunResponse of a finished unary run; None for a streamed one, or
    one too large to keep."""
    response_bytes: int | None = None
    """The size of the response the run was answered with, whether kept or not."""

    def describe(self, task: str) -> str:
        """What became of the run, for the caller who reused its id for ``task``."""
        began = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        if self.task_sha256 != task_sha256(task):
            return f"run id {self.run_id!r} was used at {began} for another task"
        if self.finished is None:
            return (f"run {self.run_id!r} started at {began} and has not finished: it is still "
                    "running, or its service stopped mid-run")  # fmt: skip
        if self.error is not None:
            return f"run {self.run_id!r} started at {began} and failed: {self.error}"
        if self.response is not None:
            return (f"run {self.run_id!r} started at {began} and finished: Run with this id "
                    "returns its recorded response")  # fmt: skip
        if self.response_bytes is not None:
            return (f"run {self.run_id!r} started at {began} and finished, but its response "
                    f"({self.response_bytes} bytes) was too large to keep for a retry")  # fmt: skip
        return f"run {self.run_id!r} started at {began} and finished (its events were streamed)"


def task_sha256(task: str) -> str:
    return hashlib.sha256(task.encode("utf-8", "surrogatepass")).hexdigest()


def kept_response(response: bytes | None, most: int) -> tuple[bytes | None, int | None]:
    """The response as a ledger keeps it (None when over ``most`` bytes: kept, it could push
    every other run out), and its size."""
    size = None if response is None else len(response)
    return (None if size is not None and size > most else response), size


def retry_answer(prior: LedgerEntry, task: str, *, unary: bool) -> bytes:
    """What a run id that was claimed before gets: the recorded response, for a unary retry
    of a finished run of the same task; AlreadyExistsError for any other reuse."""
    if unary and prior.response is not None and prior.task_sha256 == task_sha256(task):
        return prior.response
    raise AlreadyExistsError(f"{prior.describe(task)}; it is not run again: use a new run id")


class Ledger(Protocol):
    """Where run ids are claimed: this file per agent (``RunLedger``), or the shared
    database (``mesh.host.postgres_ledger``)."""

    def start(self, run_id: str, task: str, *, unary: bool) -> bytes | None:
        """Claim ``run_id``: None when the run is new (run it), the recorded response for a
        unary retry of a finished run; AlreadyExistsError for any other reuse."""
        ...

    def finish(self, run_id: str, *, error: str | None = None, response: bytes | None = None
               ) -> None:  # fmt: skip
        ...

    def close(self) -> None: ...


class RunLedger:
    def __init__(
        self, path: Path, *, retention_s: float = WEEK_S, max_bytes: int = MAX_LEDGER_BYTES
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_response_bytes = max_bytes // 16
        self._lock = threading.Lock()
        self._db = open_bounded(path, max_bytes)
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY,"
                " task_sha256 TEXT NOT NULL, started REAL NOT NULL, finished REAL, error TEXT,"
                " response BLOB, response_bytes INTEGER)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
            if "response_bytes" not in columns:  # a ledger written before responses were capped
                self._db.execute("ALTER TABLE runs ADD COLUMN response_bytes INTEGER")
            self._db.execute("DELETE FROM runs WHERE started < ?", (time.time() - retention_s,))
            self._keep_within_budget()

    def claim(self, run_id: str, task: str) -> LedgerEntry | None:
        """Record ``run_id`` as started; if it was already recorded, its entry instead."""
        with self._lock, self._db:
            inserted = self._db.execute(
                "INSERT INTO runs (run_id, task_sha256, started) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (run_id, task_sha256(task), time.time()),
            ).rowcount
            if inserted:
                self._keep_within_budget()
                return None
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return LedgerEntry(*row)

    def start(self, run_id: str, task: str, *, unary: bool) -> bytes | None:
        """Claim ``run_id`` for a run of ``task`` about to start.

        Returns the recorded response when this is a unary retry of a finished
        run of the same task (answer it with that); None when the run is new
        (run it). Any other reuse raises AlreadyExistsError.
        """
        prior = self.claim(run_id, task)
        return None if prior is None else retry_answer(prior, task, unary=unary)

    def finish(self, run_id: str, *, error: str | None = None, response: bytes | None = None
               ) -> None:  # fmt: skip
        response, size = kept_response(response, self.max_response_bytes)
        with self._lock, self._db:
            self._db.execute(
                "UPDATE runs SET finished = ?, error = ?, response = ?, response_bytes = ?"
                " WHERE run_id = ?",
                (time.time(), None if error is None else clip(error, MAX_ERROR_CHARS), response,
                 size, run_id),
            )  # fmt: skip
            self._keep_within_budget()

    def _keep_within_budget(self) -> None:
        """Forget the oldest finished runs while the file is over three eighths of the budget,
        down to a quarter (the log, up to a quarter, takes what forgetting rewrites on top).
        Called in a write transaction, under the lock."""
        if used_bytes(self._db) <= self.max_bytes * 3 // 8:
            return
        (finished,) = self._db.execute(
            "SELECT count(*) FROM runs WHERE finished IS NOT NULL"
        ).fetchone()
        while finished and used_bytes(self._db) > self.max_bytes // 4:
            batch = max(1, finished // 4)
            self._db.execute(
                "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs"
                " WHERE finished IS NOT NULL ORDER BY rowid LIMIT ?)",
                (batch,),
            )
            finished -= batch

    def close(self) -> None:
        with self._lock:
            self._db.close()


def describe_error(err: BaseException) -> str:
    """How a run ended, for its entry: the error's code and message."""
    if isinstance(err, MeshError):
        return f"{err.code}: {err.message}"
    if isinstance(err, asyncio.CancelledError | GeneratorExit):
        return "cancelled: the caller went away"
    return type(err).__name__
