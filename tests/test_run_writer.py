"""A replica's run records in the shared database: a run whose replica stopped is ended by
another replica, as failed, so that no record says "running" forever."""

from __future__ import annotations

import time

import pytest

from mesh.host import run_writer
from mesh.host.run_record import RunRecord, RunStatus
from mesh.host.run_writer import RunWriter
from mesh.rpc.servicer import ProtoCodec
from mesh.state.database import Database
from tests.support import wait_until


def test_a_run_whose_replica_stopped_is_failed_by_another(
    state_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_writer, "HEARTBEAT_S", 0.1)  # the service's clock, sped up
    monkeypatch.setattr(run_writer, "STALE_AFTER_S", 1.0)
    monkeypatch.setattr(run_writer, "MAINTENANCE_S", 0.2)
    database = Database(state_dsn).open()
    codec = ProtoCodec()

    def writer(replica: str) -> RunWriter[object]:
        return RunWriter(database, "math", replica, codec, retention_s=3600, max_bytes=1 << 20)

    going = RunRecord(run_id="r1", agent="math", task="Count.", status=RunStatus.RUNNING,
                      created=time.time(), started=time.time())  # fmt: skip
    gone = writer("gone")
    committed = gone.put("r1", going, wait=True)
    assert committed is not None
    committed.result(timeout=10)
    gone.close()  # its heartbeat stops, as if its process had died

    beating = writer("beating")  # a replica alive, with a run going
    committed = beating.put("r2", RunRecord(**{**vars(going), "run_id": "r2"}), wait=True)
    assert committed is not None
    committed.result(timeout=10)

    def recorded(run_id: str) -> RunRecord:
        row = database.fetch_one("SELECT record FROM mesh_runs WHERE run_id = %s", (run_id,))
        assert row is not None
        return codec.record_from_bytes(row[0])

    checker = writer("checker")
    ended = wait_until(lambda: (r := recorded("r1")).status is RunStatus.FAILED and r,
                       timeout_s=10)  # fmt: skip
    assert ended.error is not None and ended.error.reason == "agent_unavailable"
    assert ended.ended is not None and "replica running it stopped" in ended.error.message
    time.sleep(3 * run_writer.MAINTENANCE_S)  # more rounds of maintenance, well past stale
    assert recorded("r2").status is RunStatus.RUNNING  # its replica still beats
    for still in (beating, checker):
        still.close()
    database.close()
