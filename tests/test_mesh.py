"""The mesh as separate processes: one gRPC service per agent, real jails, real RPCs.

A session-wide mesh (manager, research, math and a deliberately slow
specialist) serves most tests; waits are bounded polls on observable state,
never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from mesh import MemoTool
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.errors import NotFoundError
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.status import error_from_rpc
from mesh.version import __version__ as mesh_version
from tests.mesh_setup import DOWN_TASK, ROOT, SEED_TASK, SLOW_TASK, SPIN_TASK
from tests.support import alive, busy_jails, descendants, wait_until


@pytest.fixture(scope="session")
def mesh(mesh_dir: Path) -> Iterator[MeshProcesses]:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    env = {"MESH_MEMO_PATH": str(mesh_dir / "memo.sqlite3")}
    with MeshProcesses(config, log_dir=mesh_dir / "logs", env=env) as processes:
        yield processes


def stub(mesh: MeshProcesses, agent: str) -> Any:
    channel = grpc.insecure_channel(mesh.addresses[agent][0])
    return agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]


def stream(mesh: MeshProcesses, task: str, **kwargs: Any) -> list[pb.RunEvent]:
    call = stub(mesh, "manager").RunStream(pb.RunStreamRequest(task=task), **kwargs)
    return [event for response in call for event in response.events]


def service_pid(mesh: MeshProcesses, agent: str) -> int:
    return next(s.process.pid for s in mesh.services if s.agent == agent)


def test_the_seed_scenario_runs_across_three_processes(mesh: MeshProcesses, mesh_dir: Path) -> None:
    events = stream(mesh, SEED_TASK, timeout=60)
    final = [e for e in events if e.WhichOneof("kind") == "final_answer" and e.depth == 0]
    assert json.loads(final[0].final_answer.answer_json) == (
        "gRPC was open-sourced in 2015; the smallest prime factor of 2015 is 5."
    )
    starts = [e for e in events if e.WhichOneof("kind") == "run_started"]
    assert [(e.agent, e.depth) for e in starts] == [
        ("manager", 0),
        ("research_specialist", 1),
        ("math_specialist", 1),
    ]
    # Each run names its trace, and it is one trace across the three processes.
    (trace_id,) = {e.run_started.trace_id for e in starts}
    assert len(trace_id) == 32 and int(trace_id, 16)
    assert all(e.parent_run_id == starts[0].run_id for e in starts[1:])
    pids = {
        service_pid(mesh, agent) for agent in ("manager", "research_specialist", "math_specialist")
    }
    assert len(pids) == 3
    # The research specialist's process wrote the memo; the math specialist's code ran in its jail.
    assert MemoTool(mesh_dir / "memo.sqlite3")("get", "grpc_year") == 2015
    code_steps = [e for e in events if e.WhichOneof("kind") == "code_action"]
    assert {e.agent for e in code_steps} == {"manager", "math_specialist"}


def test_run_returns_answer_state_and_usage(mesh: MeshProcesses) -> None:
    reply = stub(mesh, "manager").Run(pb.RunRequest(task=SEED_TASK, run_id="unary-1"), timeout=60)
    assert reply.run_id == "unary-1"
    assert reply.state == pb.RUN_STATE_SUCCEEDED and reply.steps == 3
    assert reply.answer_text.startswith("gRPC was open-sourced in 2015")
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (4769, 167)


def test_cards_tools_health_and_reflection(mesh: MeshProcesses) -> None:
    card = stub(mesh, "math_specialist").Describe(pb.DescribeRequest(), timeout=5).card
    assert (card.name, card.kind) == ("math_specialist", pb.AGENT_KIND_CODE)
    assert card.model_id == "replay:math_specialist.jsonl"
    manager = stub(mesh, "manager").Describe(pb.DescribeRequest(), timeout=5).card
    assert list(manager.managed_agents) == [
        "research_specialist",
        "math_specialist",
        "slow_specialist",
    ]
    tools = stub(mesh, "research_specialist").ListTools(pb.ListToolsRequest(), timeout=5).tools
    memo = next(t for t in tools if t.name == "memo")
    action = next(i for i in memo.inputs if i.name == "action")
    assert (action.type, json.loads(action.enum_json)) == (
        pb.VALUE_TYPE_STRING,
        ["set", "get", "list", "delete"],
    )
    schema = json.loads(memo.input_schema_json)  # the same inputs, as JSON Schema
    assert schema["type"] == "object" and schema["properties"]["action"]["enum"][0] == "set"
    assert "action" in schema["required"]
    assert card.version == mesh_version
    capabilities = card.capabilities
    assert capabilities.streaming and capabilities.cancellation and capabilities.run_ids
    assert not capabilities.tool_admin and not capabilities.tokens_required  # no [auth] here
    address = mesh.addresses["manager"][0]
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="smolmesh.v1.AgentService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "smolmesh.v1.AgentService" in services and "grpc.health.v1.Health" in services


def test_call_tool(mesh: MeshProcesses) -> None:
    math = stub(mesh, "math_specialist")
    reply = math.CallTool(pb.CallToolRequest(name="factorial", arguments_json='{"n": 5}'))
    assert json.loads(reply.result_json) == 120


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        ("CallTool", pb.CallToolRequest(name="fly"), "has no tool 'fly'"),
        ("Cancel", pb.CancelRequest(run_id="no-such-run"), "no run 'no-such-run'"),
        (
            "Run",
            pb.RunRequest(task="x", agent="physics_specialist"),
            "hosts 'math_specialist', not 'physics_specialist'",
        ),
    ],
)
def test_unknown_things_are_not_found(
    mesh: MeshProcesses, method: str, request_: Any, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub(mesh, "math_specialist"), method)(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert message in err.value.details()


def test_an_error_carries_its_reason_and_retryable_flag_declared(mesh: MeshProcesses) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub(mesh, "math_specialist").CallTool(pb.CallToolRequest(name="nope"), timeout=5)
    status = rpc_status.from_call(err.value)  # what a client in any language reads
    assert status is not None and len(status.details) == 1
    detail = pb.ErrorDetail()
    assert status.details[0].Unpack(detail)
    assert (detail.reason, detail.retryable) == ("not_found", False)
    rebuilt = error_from_rpc(err.value, "math_specialist")
    assert type(rebuilt) is NotFoundError and rebuilt.code == "not_found"


@pytest.mark.parametrize(
    ("method", "request_", "message"),
    [
        ("Run", pb.RunRequest(task="   "), "task must be a non-empty string"),
        ("Run", pb.RunRequest(task="x", max_steps=-1), "max_steps must be >= 0"),
        ("Run", pb.RunRequest(task="x" * 100_001), "task is longer than 100000"),
        (
            "CallTool",
            pb.CallToolRequest(name="factorial", arguments_json="{n: 5"),
            "arguments_json is not JSON",
        ),
        (
            "CallTool",
            pb.CallToolRequest(name="factorial", arguments_json='{"n": "five"}'),
            "argument 'n': expected integer, got string",
        ),
    ],
)
def test_bad_requests_are_invalid_argument(
    mesh: MeshProcesses, method: str, request_: Any, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub(mesh, "math_specialist"), method)(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert "Traceback" not in err.value.details()


def test_cancel_mid_run_stops_the_specialist_and_its_jail(mesh: MeshProcesses) -> None:
    slow = service_pid(mesh, "slow_specialist")
    call = stub(mesh, "manager").RunStream(pb.RunStreamRequest(task=SLOW_TASK, run_id="cancel-1"),
                                           timeout=60)  # fmt: skip
    events = (event for response in call for event in response.events)
    child = next(e for e in events if e.WhichOneof("kind") == "run_started" and e.depth == 1)
    spinning = wait_until(lambda: busy_jails(slow))
    stub(mesh, "manager").Cancel(pb.CancelRequest(run_id="cancel-1"), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        list(events)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    wait_until(lambda: not busy_jails(slow) & spinning)
    # The specialist's run ends too: then there is nothing left to cancel, and it says why.
    specialist = stub(mesh, "slow_specialist")
    wait_until(lambda: specialist.GetRun(pb.GetRunRequest(run_id=child.run_id), timeout=5).run.state
               == pb.RUN_STATE_CANCELLED)  # fmt: skip
    over = specialist.Cancel(pb.CancelRequest(run_id=child.run_id), timeout=5)
    assert (over.cancelled, over.state) == (False, pb.RUN_STATE_CANCELLED)


def test_an_a2a_cancel_stops_the_specialist_and_its_jail(mesh: MeshProcesses) -> None:
    """The manager served over A2A: CancelTask cascades as our Cancel does."""
    slow = service_pid(mesh, "slow_specialist")
    channel = grpc.insecure_channel(mesh.addresses["manager"][0])
    a2a_stub = a2a_pb2_grpc.A2AServiceStub(channel)  # type: ignore[no-untyped-call]
    version = (("a2a-version", "1.0"),)
    message = a2a.Message(message_id="a2a-cancel-1", role=a2a.ROLE_USER,
                          parts=[a2a.Part(text=SLOW_TASK)])  # fmt: skip
    call = a2a_stub.SendStreamingMessage(a2a.SendMessageRequest(message=message),
                                         metadata=version, timeout=60)  # fmt: skip
    task = next(call).task
    identities = (_identity(r) for r in call)  # each update's event, nested in the manager's
    child = next(i for i in identities if i.get("event") == "run_started" and i["depth"] == 1)
    spinning = wait_until(lambda: busy_jails(slow))
    cancelled = a2a_stub.CancelTask(a2a.CancelTaskRequest(id=task.id), metadata=version,
                                    timeout=15)  # fmt: skip
    assert cancelled.status.state == a2a.TASK_STATE_CANCELED
    rest = list(call)  # the stream ends at the terminal state
    assert rest[-1].status_update.status.state == a2a.TASK_STATE_CANCELED
    wait_until(lambda: not busy_jails(slow) & spinning)
    specialist = stub(mesh, "slow_specialist")
    wait_until(lambda: specialist.GetRun(pb.GetRunRequest(run_id=child["run_id"]), timeout=5)
               .run.state == pb.RUN_STATE_CANCELLED)  # fmt: skip
    channel.close()


def _identity(response: a2a.StreamResponse) -> dict[str, Any]:
    metadata = response.status_update.status.message.metadata
    return dict(metadata["smolmesh"]) if "smolmesh" in metadata else {}


def test_a_deadline_shorter_than_the_work_leaves_nothing_running(mesh: MeshProcesses) -> None:
    slow = service_pid(mesh, "slow_specialist")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stream(mesh, SLOW_TASK, timeout=3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10
    wait_until(lambda: not busy_jails(slow))
    # The slow specialist (limit: one run) is free again.
    wait_until(lambda: _accepts_a_run(mesh))


def _accepts_a_run(mesh: MeshProcesses) -> bool:
    call = stub(mesh, "slow_specialist").RunStream(pb.RunStreamRequest(task=SPIN_TASK), timeout=5)
    try:
        next(iter(call))
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return False
        raise
    call.cancel()
    return True


def test_a_busy_specialist_says_resource_exhausted(mesh: MeshProcesses) -> None:
    slow = stub(mesh, "slow_specialist")
    going = [pb.RUN_STATE_QUEUED, pb.RUN_STATE_RUNNING]  # a cancelled run holds its slot until
    wait_until(lambda: not slow.ListRuns(pb.ListRunsRequest(states=going), timeout=5).runs)
    first = slow.RunStream(pb.RunStreamRequest(task=SPIN_TASK), timeout=30)
    next(iter(first))  # running
    try:
        with pytest.raises(grpc.RpcError) as err:
            list(slow.RunStream(pb.RunStreamRequest(task=SPIN_TASK), timeout=5))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit" in err.value.details()
    finally:
        first.cancel()


def test_a_specialist_that_is_down_becomes_an_observation(mesh_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    config = load_mesh_config(mesh_dir / "mesh.toml")
    env = {"MESH_ADDRESS_RESEARCH_SPECIALIST": dead}
    with MeshProcesses(config, only=("manager",), env=env, log_dir=mesh_dir / "logs-down") as down:
        events = stream(down, DOWN_TASK, timeout=60)
    failed = [e for e in events if e.WhichOneof("kind") == "step_failed"]
    assert failed[0].step_failed.error.reason == "code_error"  # the code did not catch it
    assert "research_specialist could not finish the task (agent_unavailable)" in (
        failed[0].step_failed.error.message
    )
    assert "UNAVAILABLE" in failed[0].step_failed.error.message
    final = [e for e in events if e.WhichOneof("kind") == "final_answer"][-1]
    assert json.loads(final.final_answer.answer_json).startswith("The research specialist is")


def test_the_node_client_runs_a_task(mesh: MeshProcesses) -> None:
    client = ROOT / "examples" / "clients" / "node" / "client.js"
    done = subprocess.run(["node", str(client), mesh.addresses["manager"][0], SEED_TASK],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "agent manager (AGENT_KIND_CODE, model replay:manager.jsonl)" in done.stdout
    assert '    [math_specialist] -> smallest_prime_factor({"n": 2015})' in done.stdout
    assert done.stdout.strip().endswith(
        "ANSWER gRPC was open-sourced in 2015; the smallest prime factor of 2015 is 5."
    )


def test_the_cli_talks_to_the_mesh(mesh: MeshProcesses, mesh_dir: Path) -> None:
    mesh_cli = [sys.executable, "-m", "mesh"]
    config = ["--config", str(mesh_dir / "mesh.toml")]
    done = subprocess.run([*mesh_cli, "run", "--address", mesh.addresses["manager"][0], *config],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the mesh REPLAYS recorded model outputs" in done.stderr
    assert "    [research_specialist] task: Find the year gRPC" in done.stdout
    assert "[manager] final answer: gRPC was open-sourced in 2015" in done.stdout
    cards = subprocess.run([*mesh_cli, "agents", *config], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    # The config's addresses use port 0, so `mesh agents` cannot reach them: it says so.
    assert "math_specialist (127.0.0.1:0): not reachable" in cards.stdout


def test_sigterm_stops_a_service_cleanly(mesh_dir: Path) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    processes = MeshProcesses(config, only=("math_specialist",), log_dir=mesh_dir / "logs-stop")
    processes.start()
    service = processes.services[0]
    math = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(service.address))  # type: ignore[no-untyped-call]
    math.CallTool(pb.CallToolRequest(name="factorial", arguments_json='{"n": 3}'), timeout=5)
    before = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    jails = {
        int(p)
        for p, pp in (row.split() for row in before.stdout.splitlines())
        if int(pp) == service.process.pid
    }
    assert jails  # the pre-started jails of its pool
    processes.stop()
    assert service.process.returncode == 0
    after = subprocess.run(["ps", "-e", "-o", "pid="], capture_output=True, text=True)
    assert not jails & {int(p) for p in after.stdout.split()}


def test_mesh_up_serves_until_interrupted_and_leaves_nothing(mesh_dir: Path) -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "mesh", "up", "--config", str(mesh_dir / "mesh.toml"),
         "--logs", str(mesh_dir / "logs-up")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert up.stdout is not None
    header = up.stdout.readline().split()
    assert header == ["agent", "kind", "address", "model"]
    rows = {line.split()[0]: line.split() for line in (up.stdout.readline() for _ in range(4))}
    assert set(rows) == {"manager", "research_specialist", "math_specialist", "slow_specialist"}
    manager = rows["manager"][2]
    reply = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(manager)).Run(  # type: ignore[no-untyped-call]
        pb.RunRequest(task=SEED_TASK), timeout=60
    )
    assert reply.answer_text.startswith("gRPC was open-sourced in 2015")
    services = descendants(up.pid)
    assert len(services) >= 4
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=30) == 0
    assert "Stopping the mesh" in (up.stderr.read() if up.stderr else "")
    wait_until(lambda: not alive(services))


def test_mesh_up_restarts_a_service_that_dies_and_keeps_serving(mesh_dir: Path) -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "mesh", "up", "--config", str(mesh_dir / "mesh.toml"),
         "--logs", str(mesh_dir / "logs-heal")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert up.stdout is not None and up.stderr is not None
    said: list[str] = []
    threading.Thread(target=lambda: said.extend(up.stderr or ()), daemon=True).start()
    up.stdout.readline()
    rows = {line.split()[0]: line.split() for line in (up.stdout.readline() for _ in range(4))}
    math, manager = rows["math_specialist"][2], rows["manager"][2]
    try:
        victim = next(pid for pid in descendants(up.pid)
                      if "serve math_specialist" in _args(pid))  # fmt: skip
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: any(f"math_specialist is serving again on {math}" in line
                               for line in said), timeout_s=60)  # fmt: skip
        assert any("math_specialist (" in line and "exited (code -9)" in line for line in said)
        reply = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(manager)).Run(  # type: ignore[no-untyped-call]
            pb.RunRequest(task=SEED_TASK), timeout=60)  # fmt: skip
        assert reply.answer_text.startswith("gRPC was open-sourced in 2015")
        assert up.poll() is None  # the mesh stayed up throughout
    finally:
        services = descendants(up.pid)
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        wait_until(lambda: not alive(services))


def _args(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
