"""Errors inside events cross the wire as data: a failed tool call, a failed step and a
cancelled delegated run each arrive as an ``ErrorDetail`` (reason, retryable, message,
metadata), unset on success, and the audit log keeps each as an object.

The manager runs in its own process on its recorded model outputs; the research
specialist's address is dead (its calls fail, retryably) and the slow specialist spins
until cancelled.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from grpc_status import rpc_status

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.events import RunFinished, StepFailed, ToolCallFinished
from mesh.errors import ErrorInfo, RunCancelledError, ToolExecutionError
from mesh.host.audit import read_run
from mesh.launcher import MeshProcesses
from mesh.models import TokenUsage
from mesh.project import load_mesh_config
from mesh.rpc.convert import event_from_proto, event_to_proto
from mesh.rpc.status import status_for
from tests.invariants import audit_problems, stream_problems
from tests.mesh_setup import DOWN_TASK, SLOW_TASK
from tests.support import wait_until


@pytest.fixture(scope="module")
def manager(mesh_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    directory = tmp_path_factory.mktemp("error-details")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    env = {"MESH_ADDRESS_RESEARCH_SPECIALIST": dead, "MESH_AUDIT_DIR": str(directory / "audit")}
    config = load_mesh_config(mesh_dir / "mesh.toml")
    with MeshProcesses(config, only=("manager", "slow_specialist"), env=env,
                       log_dir=directory / "logs") as mesh:  # fmt: skip
        channel = grpc.insecure_channel(mesh.addresses["manager"][0])
        yield agent_pb2_grpc.AgentServiceStub(channel), directory / "audit"  # type: ignore[no-untyped-call]


def test_a_failed_tool_call_and_step_arrive_as_error_details(manager: tuple[Any, Path]) -> None:
    stub, audit = manager
    request = pb.RunStreamRequest(task=DOWN_TASK, run_id="down")
    events = [e for response in stub.RunStream(request, timeout=30) for e in response.events]
    finished = [e.tool_call_finished for e in events if e.HasField("tool_call_finished")]
    failed = next(call for call in finished if call.name == "research_specialist")
    assert failed.HasField("error")
    assert (failed.error.reason, failed.error.retryable) == ("tool_execution_error", True)
    assert dict(failed.error.metadata) == {"cause": "agent_unavailable"}
    assert failed.error.message.startswith(
        "research_specialist could not finish the task (agent_unavailable)"
    )
    assert failed.result == f"Error: {failed.error.message}"  # what the model read
    assert [call.HasField("error") for call in finished if call is not failed] == [False]
    step = next(e.step_failed for e in events if e.HasField("step_failed"))
    assert (step.error.reason, step.error.retryable) == ("code_error", False)
    assert "Code failed" in step.error.message and failed.error.message in step.error.message
    assert events[-1].depth == 0 and not events[-1].run_finished.HasField("error")  # answered
    entries = wait_until(lambda: read_run(audit, "down"))
    audited = next(e for e in entries if e["event"] == "ToolCallFinished" and not e["success"])
    assert audited["error"] == {"reason": "tool_execution_error", "retryable": True,
                                "message": failed.error.message}  # fmt: skip
    assert next(e for e in entries if e["event"] == "StepFailed")["error"]["reason"] == "code_error"
    assert audit_problems(entries) == []


def test_a_cancelled_delegation_ends_with_error_details(manager: tuple[Any, Path]) -> None:
    stub, audit = manager
    call = stub.RunStream(pb.RunStreamRequest(task=SLOW_TASK, run_id="cut"), timeout=30)
    events: list[pb.RunEvent] = []
    with pytest.raises(grpc.RpcError) as err:
        for response in call:
            events += response.events
            if any(e.depth == 1 and e.HasField("code_action") for e in response.events):
                stub.Cancel(pb.CancelRequest(run_id="cut"), timeout=5)  # the child spins
    assert err.value.code() == grpc.StatusCode.CANCELLED
    ends = {e.depth: e.run_finished.error for e in events if e.HasField("run_finished")}
    assert ends[1].reason == ends[0].reason == "run_cancelled"
    assert not ends[1].retryable and ends[1].message
    delegation = next(e.tool_call_finished for e in events
                      if e.depth == 0 and e.HasField("tool_call_finished"))  # fmt: skip
    assert delegation.error.reason == "run_cancelled"
    domain = [e for m in events if (e := event_from_proto(m)) is not None]
    assert stream_problems(domain) == []
    # The call's own status says it in the same terms.
    status = rpc_status.from_call(cast("grpc.Call", err.value))
    detail = pb.ErrorDetail()
    assert status is not None and status.details[0].Unpack(detail)
    assert (detail.reason, detail.message) == ("run_cancelled", err.value.details())
    entries = wait_until(lambda: [e for e in read_run(audit, "cut") if e["event"] == "RunFinished"
                                  and e["run_id"] == "cut"])  # fmt: skip
    assert entries[0]["error"]["reason"] == "run_cancelled"


def test_error_details_convert_both_ways_and_stay_unset_on_success() -> None:
    info = ErrorInfo("tool_execution_error", "helper failed", True, {"cause": "busy"})
    common: dict[str, Any] = {"agent": "a", "run_id": "r", "step": 1}
    events = [
        ToolCallFinished(call_id="c", name="helper", result="Error: helper failed", error=info,
                         **common),
        ToolCallFinished(call_id="d", name="helper", result="ok", **common),
        StepFailed(error=ErrorInfo("code_error", "Code failed:\nNameError"), **common),
        RunFinished(usage=TokenUsage(1, 2), duration_s=1.0, steps=1, error=info, **common),
        RunFinished(usage=TokenUsage(1, 2), duration_s=1.0, steps=1, **common),
    ]  # fmt: skip
    wire = [event_to_proto(e) for e in events]
    assert wire[0].tool_call_finished.error == pb.ErrorDetail(
        reason="tool_execution_error", retryable=True, metadata={"cause": "busy"},
        message="helper failed",
    )  # fmt: skip
    assert not wire[1].tool_call_finished.HasField("error")
    assert not wire[4].run_finished.HasField("error")
    assert [event_from_proto(m) for m in wire] == events


def test_the_rich_status_carries_the_message_too() -> None:
    code, message, detail = status_for(ToolExecutionError("x" * 5000, retryable=True))
    assert code == grpc.StatusCode.ABORTED and len(message) <= 1000
    assert (detail.reason, detail.retryable, detail.message) == ("tool_execution_error", True,
                                                                 message)  # fmt: skip
    _, message, detail = status_for(RunCancelledError("stopped"))
    assert (detail.reason, detail.message) == ("run_cancelled", "stopped")
    _, message, detail = status_for(RuntimeError("a bug"))
    assert detail.reason == "internal" and detail.message == message and "a bug" not in message
