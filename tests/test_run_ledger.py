"""The run ledger: a caller's run id runs once, whatever happens to the service in between."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mesh.errors import AlreadyExistsError, RunCancelledError
from mesh.host.run_ledger import RunLedger, describe_error, task_sha256


def test_a_run_id_is_claimed_once_and_its_outcome_kept_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    ledger = RunLedger(path)
    assert ledger.claim("r1", "task") is None  # new: run it
    running = ledger.claim("r1", "task")
    assert running is not None and running.finished is None
    assert "has not finished" in running.describe("task")
    ledger.claim("r2", "task")
    ledger.finish("r1", response=b"recorded")
    ledger.finish("r2", error="deadline_exceeded: out of time")
    ledger.claim("r3", "task")  # never finished: its service is about to die
    ledger.close()

    reopened = RunLedger(path)  # as after a restart
    first, second, third = (reopened.claim(r, "task") for r in ("r1", "r2", "r3"))
    assert first is not None and first.response == b"recorded"
    assert second is not None and "failed: deadline_exceeded" in second.describe("task")
    assert third is not None and "has not finished" in third.describe("task")
    assert "for another task" in first.describe("something else")
    assert reopened.claim("r4", "task") is None


def test_old_entries_are_dropped_when_a_service_starts(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    RunLedger(path).claim("old", "task")
    time.sleep(0.05)
    assert RunLedger(path, retention_s=0.01).claim("old", "task") is None  # forgotten: new again
    assert RunLedger(path).claim("old", "task") is not None


def test_start_answers_a_unary_retry_and_refuses_every_other_reuse(tmp_path: Path) -> None:
    ledger = RunLedger(tmp_path / "agent.sqlite3")
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


def ledger_bytes(path: Path) -> int:
    """The database and its write-ahead log (the -shm index is a fixed 32 kB)."""
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*")
               if not p.name.endswith("-shm"))  # fmt: skip


def test_the_ledger_keeps_within_its_bytes_forgetting_the_oldest_finished_runs(
    tmp_path: Path,
) -> None:
    """Callers choose run ids, so callers decide how many entries there are: past its share
    the ledger forgets the oldest finished runs; recent ones still answer a retry, and a run
    still going is never forgotten."""
    path = tmp_path / "agent.sqlite3"
    ledger = RunLedger(path, max_bytes=128 * 1024)
    assert ledger.start("still-going", "task", unary=True) is None
    for n in range(1500):  # about 1.5 MB of responses
        assert ledger.start(f"r{n}", "task", unary=True) is None
        ledger.finish(f"r{n}", response=bytes([n % 256]) * 1000)
        assert ledger_bytes(path) <= 128 * 1024
    assert all(ledger.start(f"r{n}", "task", unary=True) == bytes([n % 256]) * 1000
               for n in range(1490, 1500))  # fmt: skip
    assert ledger.start("r0", "task", unary=True) is None  # forgotten: it runs again
    going = ledger.claim("still-going", "task")
    assert going is not None and going.finished is None


def test_what_a_row_keeps_is_bounded(tmp_path: Path) -> None:
    ledger = RunLedger(tmp_path / "agent.sqlite3", max_bytes=160 * 1024)  # responses <= 10 kB
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
