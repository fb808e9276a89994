"""Durable state: every memo write the service acknowledged survives a SIGKILL mid-stream."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from pathlib import Path

import grpc

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.launcher import MeshProcesses
from mesh.services import load_mesh_config
from tests.support import wait_until

CONFIG = """
[mesh]
replay = "always"
[agents.research_specialist]
kind = "tool-calling"
description = "Remembers."
address = "127.0.0.1:0"
tools = ["memo"]
cassette = "bundled:research_specialist.jsonl"
"""


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(CONFIG)
    config = load_mesh_config(tmp_path / "mesh.toml")
    memo = tmp_path / "memo.sqlite3"
    env = {"MESH_MEMO_PATH": str(memo)}
    acknowledged: set[str] = set()
    lock = threading.Lock()
    with MeshProcesses(config, env=env, log_dir=tmp_path / "logs") as mesh:
        service = mesh.services[0]
        stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(service.address))  # type: ignore[no-untyped-call]

        def writer(worker: int) -> None:
            for i in range(10_000):
                key = f"w{worker}-{i}"
                arguments = json.dumps({"action": "set", "key": key, "value": i})
                try:
                    stub.CallTool(pb.CallToolRequest(name="memo", arguments_json=arguments),
                                  timeout=5)  # fmt: skip
                except grpc.RpcError:
                    return  # the service is gone
                with lock:
                    acknowledged.add(key)

        writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for thread in writers:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 200)
        service.process.send_signal(signal.SIGKILL)  # writes are in flight right now
        for thread in writers:
            thread.join(timeout=30)

    with sqlite3.connect(memo) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # A restarted service sees every acknowledged write.
    with MeshProcesses(config, env=env, log_dir=tmp_path / "logs-again") as mesh:
        stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(mesh.services[0].address))  # type: ignore[no-untyped-call]
        reply = stub.CallTool(pb.CallToolRequest(name="memo", arguments_json='{"action": "list"}'),
                              timeout=10)  # fmt: skip
    stored = set(json.loads(reply.result_json))
    assert len(acknowledged) >= 200
    assert acknowledged <= stored
