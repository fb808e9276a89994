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

Entries older than ``retention_s`` are dropped when a service starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import AlreadyExistsError, MeshError
from mesh.paths import data_path

__all__ = ["LedgerEntry", "RunLedger", "default_run_ledger_path", "task_sha256"]

WEEK_S = 7 * 24 * 3600.0


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
    """The serialized RunResponse of a finished unary run; None for a streamed one."""

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
        return f"run {self.run_id!r} started at {began} and finished (its events were streamed)"


def task_sha256(task: str) -> str:
    return hashlib.sha256(task.encode("utf-8", "surrogatepass")).hexdigest()


class RunLedger:
    def __init__(self, path: Path, *, retention_s: float = WEEK_S) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=10, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY,"
                " task_sha256 TEXT NOT NULL, started REAL NOT NULL, finished REAL, error TEXT,"
                " response BLOB)"
            )
            self._db.execute("DELETE FROM runs WHERE started < ?", (time.time() - retention_s,))

    def claim(self, run_id: str, task: str) -> LedgerEntry | None:
        """Record ``run_id`` as started; if it was already recorded, its entry instead."""
        with self._lock, self._db:
            inserted = self._db.execute(
                "INSERT INTO runs (run_id, task_sha256, started) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (run_id, task_sha256(task), time.time()),
            ).rowcount
            if inserted:
                return None
            row = self._db.execute(
                "SELECT run_id, task_sha256, started, finished, error, response FROM runs"
                " WHERE run_id = ?",
                (run_id,),
            ).fetchone()
        return LedgerEntry(*row)

    def start(self, run_id: str, task: str, *, unary: bool) -> bytes | None:
        """Claim ``run_id`` for a run of ``task`` about to start.

        Returns the recorded response when this is a unary retry of a finished
        run of the same task (answer it with that); None when the run is new
        (run it). Any other reuse raises AlreadyExistsError.
        """
        prior = self.claim(run_id, task)
        if prior is None:
            return None
        if unary and prior.response is not None and prior.task_sha256 == task_sha256(task):
            return prior.response
        raise AlreadyExistsError(f"{prior.describe(task)}; it is not run again: use a new run id")

    @contextmanager
    def recording(self, run_id: str) -> Iterator[Callable[[bytes], None]]:
        """Around a started run: keeps the response given to the callback, or the error."""
        response: list[bytes] = []
        try:
            yield response.append
        except BaseException as err:
            self.finish(run_id, error=describe_error(err))
            raise
        self.finish(run_id, response=response[0] if response else None)

    def finish(self, run_id: str, *, error: str | None = None, response: bytes | None = None
               ) -> None:  # fmt: skip
        with self._lock, self._db:
            self._db.execute(
                "UPDATE runs SET finished = ?, error = ?, response = ? WHERE run_id = ?",
                (time.time(), error, response, run_id),
            )

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
