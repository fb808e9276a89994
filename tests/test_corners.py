"""Corners where a path used to skip what every other path does, through a real service.

One math specialist in its own process, on LiteLLM against a local
OpenAI-compatible server: the best-answer call after ``max_steps`` goes
through the normal model path (audited; a cancel stays a cancel), a direct
``CallTool`` goes through the tool runner (audited, traced), and the run
ledger's SQLite never holds up the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh import Cassette, ChatMessage, ModelResponse, ReplayServer, TokenUsage
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.append_only import read_records
from mesh.host.audit import read_run
from mesh.telemetry.trace_file import read_spans
from tests.invariants import audit_problems
from tests.mesh_setup import litellm_math_service
from tests.support import code, wait_until

FACTORIAL_TASK = "What is 7!?"
THINK_TASK = "Think it over."


def answer(text: str) -> ModelResponse:
    return ModelResponse(ChatMessage("assistant", text), TokenUsage(50, 10))


@pytest.fixture(scope="module")
def model() -> Iterator[ReplayServer]:
    entries = [
        *Cassette.from_responses([answer(code("final_answer(factorial(7))"))],
                                 task=FACTORIAL_TASK).entries,
        *Cassette.from_responses([answer(code("print('thinking')")), answer("It is 42.")],
                                 task=THINK_TASK).entries,
    ]  # fmt: skip
    with ReplayServer(Cassette(entries)) as server:
        yield server


@pytest.fixture(scope="module")
def service(
    model: ReplayServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path]]:
    directory = tmp_path_factory.mktemp("corners")
    env = {"MESH_AUDIT_DIR": str(directory / "audit"), "MESH_TRACE_DIR": str(directory / "traces"),
           "MESH_RUNS_DIR": str(directory / "runs")}  # fmt: skip
    with litellm_math_service(model.api_base, directory, env) as mesh:
        channel = grpc.insecure_channel(mesh.addresses["math_specialist"][0])
        yield agent_pb2_grpc.AgentServiceStub(channel), directory  # type: ignore[no-untyped-call]


def test_the_answer_after_max_steps_is_an_audited_model_call(service: tuple[Any, Path]) -> None:
    stub, directory = service
    response = stub.Run(pb.RunRequest(task=THINK_TASK, max_steps=1, run_id="think"), timeout=30)
    assert response.state == pb.RUN_STATE_MAX_STEPS and response.answer_text == "It is 42."
    assert response.usage.input_tokens == 100  # both model calls count
    entries = read_run(directory / "audit", "think")
    calls = [e for e in entries if e["event"] == "ModelOutput"]
    assert [(e["step"], e["output"]) for e in calls][1] == (2, "It is 42.")
    assert audit_problems(entries) == []
    wait_until(lambda: _chat_spans(directory, "It is 42."))  # spans are written in batches


def _chat_spans(directory: Path, output: str) -> list[Any]:
    return [
        s
        for s in read_spans(directory / "traces")
        if s.name.startswith("chat ") and s.attributes.get("gen_ai.output.text") == output
    ]


def test_a_cancel_during_the_answer_after_max_steps_stays_a_cancel(
    model: ReplayServer, service: tuple[Any, Path]
) -> None:
    stub, directory = service
    model.inject_faults(None, "hang")  # the first call is answered, the best-answer call hangs
    seen, before = len(model.requests), len(model.abandoned)
    call = stub.RunStream(pb.RunStreamRequest(task=THINK_TASK, max_steps=1, run_id="cut"),
                          timeout=30)  # fmt: skip
    wait_until(lambda: any(_asks_for_best_answer(r) for r in model.requests[seen:]))
    stub.Cancel(pb.CancelRequest(run_id="cut"), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.CANCELLED  # not RESOURCE_EXHAUSTED (max steps)
    wait_until(lambda: len(model.abandoned) > before)
    finished = [e for e in read_run(directory / "audit", "cut") if e["event"] == "RunFinished"]
    assert finished[0]["error"]["reason"] == "run_cancelled"


def test_call_tool_goes_through_the_tool_runner(service: tuple[Any, Path]) -> None:
    stub, directory = service
    response = stub.CallTool(pb.CallToolRequest(name="factorial", arguments_json='{"n": 5}'),
                             timeout=10)  # fmt: skip
    assert response.result_json == "120"
    with pytest.raises(grpc.RpcError) as err:
        stub.CallTool(pb.CallToolRequest(name="factorial", arguments_json='{"n": "x"}'), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    entries = [e for path in sorted((directory / "audit").glob("*.jsonl"))
               for e in read_records(path) if e["run_id"].startswith("call-")]  # fmt: skip
    assert audit_problems(entries) == []
    finished = [e for e in entries if e["event"] == "ToolCallFinished"]
    assert [e["success"] for e in finished][-2:] == [True, False]
    spans = wait_until(lambda: [s for s in read_spans(directory / "traces")
                                if s.name == "execute_tool factorial"])  # fmt: skip
    assert spans


def test_a_locked_run_ledger_does_not_stop_the_service(service: tuple[Any, Path]) -> None:
    stub, directory = service
    ledger = sqlite3.connect(directory / "runs" / "math_specialist.sqlite3", timeout=10)
    ledger.execute("BEGIN EXCLUSIVE")  # a slow disk, say: claiming a run id waits
    try:
        waiting = stub.Run.future(pb.RunRequest(task=FACTORIAL_TASK, run_id="locked"), timeout=30)
        # The service still answers other calls meanwhile: its event loop is not blocked.
        assert stub.Describe(pb.DescribeRequest(), timeout=3).card.name == "math_specialist"
        assert not waiting.done()
    finally:
        ledger.rollback()
        ledger.close()
    assert waiting.result().answer_json == "5040"


def _asks_for_best_answer(request: dict[str, Any]) -> bool:
    return "maximum number of steps" in str(request.get("messages", [])[-1:])
