"""The run ledger: a caller's run id runs once, whatever happens to the service in between.

The contract is the same on both backends (an SQLite file per agent, and the state
database shared by replicas), so most tests run on each through ``backend``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh.errors import AlreadyExistsError, RunCancelledError, StateUnavailableError
from mesh.host.postgres_ledger import PostgresRunLedger
from mesh.host.run_ledger import RunLedger, describe_error, task_sha256
from mesh.state.database import Database
from tests.postgres_server import PostgresServer
from tests.support import wait_until

AnyLedger = RunLedger | PostgresRunLedger


@dataclass
class Backend:
    """Where a test's ledger lives: ``open`` opens it (again, as after a restart), and
    ``stored_bytes`` says what it takes there."""

    name: str
    open: Callable[..., AnyLedger]
    stored_bytes: Callable[[], int]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "agent.sqlite3"
        yield Backend("sqlite", lambda **kw: RunLedger(path, **kw), lambda: ledger_bytes(path))
        return
    database = Database(request.getfixturevalue("state_dsn")).open()
    try:
        yield Backend("postgres", lambda **kw: PostgresRunLedger(database, "agent", **kw),
                      lambda: postgres_bytes(database, "agent"))  # fmt: skip
    finally:
        database.close()


def ledger_bytes(path: Path) -> int:
    """The database and its write-ahead log (the -shm index is a fixed 32 kB)."""
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*")
               if not p.name.endswith("-shm"))  # fmt: skip


def postgres_bytes(database: Database, agent: str) -> int:
    """The agent's usage row, which must be exactly what its rows count."""
    with database.transaction() as db:
        (counted,) = db.execute(
            "SELECT coalesce(sum(bytes), 0) FROM mesh_run_ledger WHERE agent = %s", (agent,)
        ).fetchone() or (0,)
        (used,) = db.execute(
            "SELECT bytes FROM mesh_run_ledger_usage WHERE agent = %s", (agent,)
        ).fetchone() or (0,)
    assert used == counted, f"usage row says {used} bytes, the rows hold {counted}"
    return int(used)


def test_a_run_id_is_claimed_once_and_its_outcome_kept_across_reopening(
    backend: Backend,
) -> None:
    ledger = backend.open()
    assert ledger.claim("r1", "task") is None  # new: run it
    running = ledger.claim("r1", "task")
    assert running is not None and running.finished is None
    assert "has not finished" in running.describe("task")
    ledger.claim("r2", "task")
    ledger.finish("r1", response=b"recorded")
    ledger.finish("r2", error="deadline_exceeded: out of time")
    ledger.claim("r3", "task")  # never finished: its service is about to die
    ledger.close()

    reopened = backend.open()  # as after a restart
    first, second, third = (reopened.claim(r, "task") for r in ("r1", "r2", "r3"))
    assert first is not None and first.response == b"recorded"
    assert second is not None and "failed: deadline_exceeded" in second.describe("task")
    assert third is not None and "has not finished" in third.describe("task")
    assert "for another task" in first.describe("something else")
    assert reopened.claim("r4", "task") is None


def test_old_entries_are_dropped_when_a_service_starts(backend: Backend) -> None:
    backend.open().claim("old", "task")
    time.sleep(0.05)  # the entry ages past the 10 ms retention below
    assert backend.open(retention_s=0.01).claim("old", "task") is None  # forgotten: new again
    assert backend.open().claim("old", "task") is not None


def test_start_answers_a_unary_retry_and_refuses_every_other_reuse(backend: Backend) -> None:
    ledger = backend.open()
    assert ledger.start("u", "task", unary=True) is None
    ledger.finish("u", response=b"response")
    assert ledger.start("u", "task", unary=True) == b"response"  # the retry's answer
    with pytest.raises(AlreadyExistsError, match="for another task"):
        ledger.start("u", "another task", unary=True)
    with pytest.raises(AlreadyExistsError, match="Run with this id returns"):
        ledger.start("u", "task", unary=False)  # a stream cannot replay what was not recorded

    assert ledger.start("s", "task", unary=False) is None
    ledger.finish("s", error=describe_error(RunCancelledError("the caller cancelled")))
    with pytest.raises(AlreadyExistsError, match="failed: run_cancelled: the caller cancelled"):
        ledger.start("s", "task", unary=True)


def test_the_ledger_keeps_within_its_bytes_forgetting_the_oldest_finished_runs(
    backend: Backend,
) -> None:
    """Callers choose run ids, so callers decide how many entries there are: past its share
    the ledger forgets the oldest finished runs; recent ones still answer a retry, and a run
    still going is never forgotten."""
    ledger = backend.open(max_bytes=128 * 1024)
    # The file holds its log and free pages too; the database's count is of the rows alone.
    bound = 128 * 1024 if backend.name == "sqlite" else 128 * 1024 * 3 // 8
    assert ledger.start("still-going", "task", unary=True) is None
    for n in range(1500):  # about 1.5 MB of responses
        assert ledger.start(f"r{n}", "task", unary=True) is None
        ledger.finish(f"r{n}", response=bytes([n % 256]) * 1000)
        assert backend.stored_bytes() <= bound
    assert all(ledger.start(f"r{n}", "task", unary=True) == bytes([n % 256]) * 1000
               for n in range(1490, 1500))  # fmt: skip
    assert ledger.start("r0", "task", unary=True) is None  # forgotten: it runs again
    going = ledger.claim("still-going", "task")
    assert going is not None and going.finished is None


def test_what_a_row_keeps_is_bounded(backend: Backend) -> None:
    ledger = backend.open(max_bytes=160 * 1024)  # responses <= 10 kB
    ledger.start("big", "task", unary=True)
    ledger.finish("big", response=b"x" * 20_000)
    with pytest.raises(AlreadyExistsError, match=r"response \(20000 bytes\) was too large"):
        ledger.start("big", "task", unary=True)  # finished, so never run again; not answered
    ledger.start("failed", "task", unary=True)
    ledger.finish("failed", error="model_error: " + "e" * 100_000)
    failed = ledger.claim("failed", "task")
    assert failed is not None and failed.error is not None and len(failed.error) <= 1000


def test_a_ledger_from_before_responses_were_capped_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, task_sha256 TEXT NOT NULL,"
                   " started REAL NOT NULL, finished REAL, error TEXT, response BLOB)")  # fmt: skip
        db.execute("INSERT INTO runs VALUES ('old', ?, ?, ?, NULL, ?)",
                   (task_sha256("task"), time.time(), time.time(), b"kept"))  # fmt: skip
    db.close()
    assert RunLedger(path).start("old", "task", unary=True) == b"kept"


# The shared ledger: what replicas of an agent see of each other's runs.


@pytest.fixture
def replicas(state_dsn: str) -> Iterator[tuple[Database, Database]]:
    """Two processes' pools on one database, as two replicas have."""
    first, second = Database(state_dsn).open(), Database(state_dsn).open()
    yield first, second
    first.close()
    second.close()


def test_a_retried_run_id_is_answered_or_refused_by_any_replica(
    replicas: tuple[Database, Database],
) -> None:
    a, b = (PostgresRunLedger(database, "agent") for database in replicas)
    assert a.start("r", "task", unary=True) is None
    with pytest.raises(AlreadyExistsError, match="has not finished"):
        b.start("r", "task", unary=True)  # running on the other replica
    a.finish("r", response=b"answer")
    assert b.start("r", "task", unary=True) == b"answer"
    with pytest.raises(AlreadyExistsError, match="Run with this id returns"):
        b.start("r", "task", unary=False)
    assert PostgresRunLedger(replicas[1], "other agent").start("r", "task", unary=True) is None


def test_replicas_writing_at_once_run_each_id_once_and_keep_the_count_exact(
    replicas: tuple[Database, Database],
) -> None:
    """Of the claims of one id, exactly one wins; and the agent's byte count stays exact
    while its replicas write at once."""
    ledgers = [PostgresRunLedger(replicas[n % 2], "agent") for n in range(8)]
    barrier = threading.Barrier(len(ledgers))
    outcomes: list[str] = []

    def claim(me: int, ledger: PostgresRunLedger) -> None:
        barrier.wait()
        for n in range(30):
            try:
                if ledger.start(f"r{n}", "task", unary=True) is None:
                    outcomes.append(f"r{n}")
                    ledger.finish(f"r{n}", response=b"r" * n)
            except AlreadyExistsError:
                pass
            ledger.start(f"t{me}-{n}", "task", unary=False)
            ledger.finish(f"t{me}-{n}", error="e" * n)

    threads = [threading.Thread(target=claim, args=pair) for pair in enumerate(ledgers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == sorted(f"r{n}" for n in range(30))  # each ran exactly once
    assert postgres_bytes(replicas[0], "agent") > 30 * 9 * 200


def test_recorded_runs_survive_a_killed_database_and_service_resumes_by_itself() -> None:
    server = PostgresServer()
    try:
        server.start()
        database = Database(server.dsn()).open()
        ledger = PostgresRunLedger(database, "agent")
        ledger.start("done", "task", unary=True)
        ledger.finish("done", response=b"answer")
        ledger.start("going", "task", unary=True)
        server.kill()
        with pytest.raises(StateUnavailableError, match=r"state database .* cannot be reached"):
            ledger.start("new", "task", unary=True)
        server.start()

        def answers() -> bytes | None:
            try:
                return ledger.start("done", "task", unary=True)
            except StateUnavailableError:
                return None

        assert wait_until(answers, timeout_s=60) == b"answer"
        with pytest.raises(AlreadyExistsError, match="has not finished"):
            ledger.start("going", "task", unary=True)
        assert ledger.start("new", "task", unary=True) is None  # its claim never committed
        database.close()
    finally:
        server.close()
