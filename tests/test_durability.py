"""Durable state: what a service acknowledged survives a SIGKILL at any moment.

Memo writes and run records are checked after the service is killed
mid-stream several times, with writers from direct tool calls and from whole
runs in flight: with state in files (SQLite, WAL, synchronous=FULL; the audit
log), and in a shared PostgreSQL database (committed before acknowledged).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.host.audit import read_run
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.mesh_setup import SEED_SERVICES
from tests.support import wait_until

CONFIG = """
[mesh]
replay = "always"
[agents.research_specialist]
kind = "tool-calling"
description = "Remembers."
address = "127.0.0.1:0"
tools = ["memo", "web_search"]
cassette = "SEED/research_specialist/cassette.jsonl"
agent = "services.research_specialist.agent:build"
""".replace("SEED", str(SEED_SERVICES))
TASK = (
    "Find the year gRPC was open-sourced and remember it in the memo under the key 'grpc_year'. "
    "Answer with the year only."
)
KILLS = 3
WRITES_PER_KILL = 150


class Acknowledged:
    """What the service confirmed: memo keys whose set returned, runs whose end arrived."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.runs: set[str] = set()
        self._lock = threading.Lock()

    def add(self, into: set[str], item: str) -> None:
        with self._lock:
            into.add(item)

    def count(self) -> int:
        with self._lock:
            return len(self.keys)


def memo_writer(stub: agent_pb2_grpc.AgentServiceStub, prefix: str, acked: Acknowledged) -> None:
    for i in range(100_000):
        key = f"{prefix}-{i}"
        arguments = json.dumps({"action": "set", "key": key, "value": i})
        try:
            stub.CallTool(pb.CallToolRequest(name="memo", arguments_json=arguments), timeout=5)
        except grpc.RpcError:
            return  # the service is gone
        acked.add(acked.keys, key)


def run_writer(stub: agent_pb2_grpc.AgentServiceStub, prefix: str, acked: Acknowledged) -> None:
    for i in range(100_000):
        run_id = f"{prefix}-run-{i}"
        try:
            reply = stub.Run(pb.RunRequest(task=TASK, run_id=run_id), timeout=10)
        except grpc.RpcError:
            return
        if reply.answer_text == "2015":
            acked.add(acked.runs, run_id)


def kill_while_writing(config_path: Path, env: dict[str, str], round_: int, logs: Path,
                       acked: Acknowledged) -> None:  # fmt: skip
    config = load_mesh_config(config_path)
    with MeshProcesses(config, env=env, log_dir=logs) as mesh:
        service = mesh.services[0]
        channel = grpc.insecure_channel(service.address)
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        writers: list[tuple[Callable[..., None], str]] = [
            (memo_writer, f"k{round_}-w{w}") for w in range(4)
        ] + [(run_writer, f"r{round_}-w{w}") for w in range(2)]
        threads = [threading.Thread(target=f, args=(stub, p, acked)) for f, p in writers]
        for thread in threads:
            thread.start()
        target = acked.count() + WRITES_PER_KILL
        wait_until(lambda: acked.count() >= target)
        service.process.send_signal(signal.SIGKILL)  # writes and runs are in flight right now
        for thread in threads:
            thread.join(timeout=30)
        channel.close()


@pytest.mark.parametrize("state", ["files", "postgres"])
def test_acknowledged_writes_and_runs_survive_sigkill(
    state: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    (tmp_path / "mesh.toml").write_text(CONFIG)
    memo = tmp_path / "memo.sqlite3"
    audit = tmp_path / "audit"
    env = {"MESH_MEMO_PATH": str(memo), "MESH_AUDIT_DIR": str(audit)}
    if state == "postgres":
        env["MESH_STATE_DSN"] = request.getfixturevalue("state_dsn")
    acked = Acknowledged()
    for round_ in range(KILLS):
        kill_while_writing(tmp_path / "mesh.toml", env, round_, tmp_path / f"logs-{round_}", acked)
        if state == "files":
            with sqlite3.connect(memo) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    config = load_mesh_config(tmp_path / "mesh.toml")
    with MeshProcesses(config, env=env, log_dir=tmp_path / "logs-after") as mesh:
        channel = grpc.insecure_channel(mesh.services[0].address)
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.CallTool(pb.CallToolRequest(name="memo", arguments_json='{"action": "list"}'),
                              timeout=10)  # fmt: skip
        recorded = {run_id: stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=10).run.state
                    for run_id in acked.runs} if state == "postgres" else {}  # fmt: skip
        channel.close()
    stored = set(json.loads(reply.result_json))
    assert len(acked.keys) >= KILLS * WRITES_PER_KILL
    assert acked.keys <= stored, f"lost {len(acked.keys - stored)} acknowledged writes"

    assert acked.runs, "no run finished before the kills"
    for run_id in acked.runs:  # every run the client saw end has its whole record
        events = [e["event"] for e in read_run(audit, run_id)]
        assert events[0] == "RunStarted" and events[-1] == "RunFinished", (run_id, events)
        assert events.count("ToolCallFinished") == 3  # web_search, memo, final_answer
    # In PostgreSQL, the run records outlive the process that ran them.
    assert set(recorded.values()) <= {pb.RUN_STATE_SUCCEEDED}, recorded
