"""The run ledger: a caller's run id runs once, whatever happens to the service in between."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mesh.errors import AlreadyExistsError, RunCancelledError
from mesh.rpc.run_ledger import RunLedger


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
    with ledger.recording("u") as record:
        record(b"response")
    assert ledger.start("u", "task", unary=True) == b"response"  # the retry's answer
    with pytest.raises(AlreadyExistsError, match="for another task"):
        ledger.start("u", "another task", unary=True)
    with pytest.raises(AlreadyExistsError, match="Run with this id returns"):
        ledger.start("u", "task", unary=False)  # a stream cannot replay what was not recorded

    assert ledger.start("s", "task", unary=False) is None
    with pytest.raises(RunCancelledError), ledger.recording("s"):
        raise RunCancelledError("the caller cancelled")
    with pytest.raises(AlreadyExistsError, match="failed: run_cancelled: the caller cancelled"):
        ledger.start("s", "task", unary=True)
