"""One trace across the mesh, received by a real OTLP/gRPC receiver in this process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from tests.mesh_setup import SEED_TASK
from tests.otlp_receiver import Receiver, Span


def test_one_trace_spans_the_delegation_tree(
    receiver: tuple[Receiver, int],
    mesh_dir: Path,
    tmp_path: Path,
) -> None:
    collector, port = receiver
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "MESH_TRACE_DIR": str(tmp_path / "traces"),
    }
    config = load_mesh_config(mesh_dir / "mesh.toml")
    only = ("manager", "research_specialist", "math_specialist")
    with MeshProcesses(config, env=env, only=only, log_dir=tmp_path / "logs") as mesh:
        manager = agent_pb2_grpc.AgentServiceStub(
            grpc.insecure_channel(mesh.addresses["manager"][0])
        )  # type: ignore[no-untyped-call]
        reply = manager.Run(pb.RunRequest(task=SEED_TASK, run_id="traced-1"), timeout=60)
    assert reply.answer_text.startswith("gRPC was open-sourced in 2015")
    # Stopping the mesh flushed every service's spans.

    root = next(
        s
        for s in collector.spans
        if s.name == "invoke_agent manager" and s.attributes.get("mesh.run_id") == "traced-1"
    )
    spans = [s for s in collector.spans if s.trace_id == root.trace_id]
    assert {s.service for s in spans} == {"manager", "research_specialist", "math_specialist"}
    by_id = {s.span_id: s for s in spans}

    def ancestors(span: Span) -> list[str]:
        chain = []
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            chain.append(f"{span.service}:{span.name}")
        return chain

    research = next(s for s in spans if s.name == "invoke_agent research_specialist")
    assert ancestors(research)[:6] == [
        "research_specialist:/smolmesh.v1.AgentService/RunStream",
        "manager:smolmesh.v1.AgentService/RunStream",
        "manager:execute_tool research_specialist",
        "manager:sandbox.exec",  # the call came from jailed code, through the tool bridge
        "manager:agent.step",
        "manager:invoke_agent manager",
    ]
    math_tool = next(s for s in spans if s.name == "execute_tool smallest_prime_factor")
    assert "math_specialist:invoke_agent math_specialist" in ancestors(math_tool)
    assert "manager:invoke_agent manager" in ancestors(math_tool)

    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 8  # 3 manager + 3 research + 2 math model calls
    chat = next(s for s in chats if s.service == "math_specialist")
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "replay:math_specialist.jsonl"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 1210
    assert chat.attributes["gen_ai.usage.output_tokens"] == 33
    # Each call's span holds only the messages new since its run's previous call.
    manager_chats = sorted((s for s in chats if s.service == "manager"), key=lambda s: s.start_ns)
    prompts = [json.loads(s.attributes["gen_ai.input.messages"]) for s in manager_chats]
    kept = [s.attributes["mesh.input.messages_kept"] for s in manager_chats]
    assert [p[0]["role"] for p in prompts] == ["system", "assistant", "assistant"]
    assert kept[0] == 0 and 2 <= kept[1] < kept[2]
    assert all(len(p) <= 2 for p in prompts[1:])
    tool = next(s for s in spans if s.name == "execute_tool memo")
    assert tool.attributes["gen_ai.tool.name"] == "memo"
    assert tool.attributes["mesh.tool.success"] is True

    # The same spans went to each service's local trace file.
    (trace_file,) = (tmp_path / "traces").glob("math_specialist-*.jsonl")  # one per process
    local = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert any(r["trace_id"] == root.trace_id and r["name"] == "sandbox.exec" for r in local)


def test_mesh_trace_lists_and_draws_traces(tmp_path: Path, mesh_dir: Path) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    env = {"MESH_TRACE_DIR": str(tmp_path / "traces")}
    only = ("manager", "research_specialist", "math_specialist")
    with MeshProcesses(config, env=env, only=only, log_dir=tmp_path / "logs") as mesh:
        manager = agent_pb2_grpc.AgentServiceStub(
            grpc.insecure_channel(mesh.addresses["manager"][0])
        )  # type: ignore[no-untyped-call]
        manager.Run(pb.RunRequest(task=SEED_TASK), timeout=60)
    mesh_cli = [sys.executable, "-m", "mesh", "trace", "--dir", str(tmp_path / "traces")]
    listing = subprocess.run(mesh_cli, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    first = listing.stdout.splitlines()[0]
    assert "[manager, math_specialist, research_specialist]" in first
    tree = subprocess.run([*mesh_cli, first.split()[0][:12]], capture_output=True, text=True,
                          timeout=60).stdout.splitlines()  # fmt: skip
    assert tree[0].startswith("/smolmesh.v1.AgentService/Run [manager]")
    assert tree[1].startswith("  invoke_agent manager [manager]")
    research = next(line for line in tree if "invoke_agent research_specialist" in line)
    assert research.startswith(" " * 14)  # nested under the manager's step, sandbox and tool
    assert any(
        "chat replay:math_specialist.jsonl [math_specialist]" in line
        and "1210 in / 33 out tokens" in line
        for line in tree
    )


def _timed_runs(config: Any, env: dict[str, str], log_dir: Path) -> tuple[float, float]:
    """Seconds for five seed runs, and for stopping the services afterwards."""
    only = ("manager", "research_specialist", "math_specialist")
    mesh = MeshProcesses(config, env=env, only=only, log_dir=log_dir).start()
    try:
        manager = agent_pb2_grpc.AgentServiceStub(
            grpc.insecure_channel(mesh.addresses["manager"][0])
        )  # type: ignore[no-untyped-call]
        manager.Run(pb.RunRequest(task=SEED_TASK), timeout=60)  # warm up
        started = time.monotonic()
        for _ in range(5):
            manager.Run(pb.RunRequest(task=SEED_TASK), timeout=60)
        runs = time.monotonic() - started
    finally:
        stopping = time.monotonic()
        mesh.stop()
    return runs, time.monotonic() - stopping


def test_a_collector_that_is_down_slows_nothing(
    receiver: tuple[Receiver, int], mesh_dir: Path, tmp_path: Path
) -> None:
    _, port = receiver
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    config = load_mesh_config(mesh_dir / "mesh.toml")
    base = {"OTEL_EXPORTER_OTLP_INSECURE": "true", "MESH_TRACE_DIR": str(tmp_path / "t")}
    up_runs, up_stop = _timed_runs(
        config, {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}, tmp_path / "up"
    )
    down_runs, down_stop = _timed_runs(
        config,
        {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead}"},
        tmp_path / "down",
    )
    timings = (
        f"up: {up_runs:.3f} s, stop {up_stop:.2f} s; down: {down_runs:.3f} s, {down_stop:.2f} s"
    )
    assert down_runs < 2 * up_runs + 0.5, timings
    assert down_stop < 10, down_stop  # exports give up fast; shutdown does not hang
    assert up_stop < 10, up_stop
