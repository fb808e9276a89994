"""Append-only logs: whole lines under concurrent writers, torn lines cost only themselves,
and the records a caller is answered with are fsynced."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from mesh.agents.events import ModelOutput, RunFinished, RunStarted
from mesh.append_only import append_lines, read_records
from mesh.host.audit import AuditLog, read_run
from mesh.models import TokenUsage

WRITERS = 4
LINES_PER_WRITER = 400


def _write_many(path: str, writer: int) -> None:
    for i in range(LINES_PER_WRITER):
        padding = "x" * ((writer * 7919 + i * 104_729) % 20_000)  # up to 20 kB: past any buffer
        append_lines(Path(path), [json.dumps({"w": writer, "i": i, "pad": padding}) + "\n"])


def test_concurrent_processes_never_interleave_within_a_line(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(str(path), w)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == WRITERS * LINES_PER_WRITER
    records = [json.loads(line) for line in lines]  # every line whole
    assert {(r["w"], r["i"]) for r in records} == {
        (w, i) for w in range(WRITERS) for i in range(LINES_PER_WRITER)
    }


def test_a_line_torn_by_a_crash_costs_only_itself(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "agent.jsonl")
    log.record(RunStarted(agent="a", run_id="r1", task="t"))
    log.close()
    with log.path.open("a") as torn:  # the machine went down mid-write
        torn.write('{"ts": 1.0, "event": "ModelOutput", "agent": "a", "run_id": "r1", "pro')
    restarted = AuditLog(tmp_path / "agent.jsonl")
    restarted.record(RunFinished(agent="a", run_id="r1", usage=TokenUsage(), duration_s=0.1,
                                 steps=1))  # fmt: skip
    assert [e["event"] for e in read_run(tmp_path, "r1")] == ["RunStarted", "RunFinished"]
    assert len(list(read_records(log.path))) == 2


def test_a_run_record_is_fsynced_when_the_run_ends_and_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    log = AuditLog(tmp_path / "agent.jsonl")
    log.record(RunStarted(agent="a", run_id="r1", task="t"))
    log.record(ModelOutput(agent="a", run_id="r1", step=1, text="hi", usage=TokenUsage(1, 1)))
    assert synced == []  # in flight: the page cache is enough to survive a SIGKILL
    log.record(RunFinished(agent="a", run_id="r1", usage=TokenUsage(), duration_s=0.1, steps=1))
    assert synced == [str(log.path)]  # the caller's answer waits for the disk
