# ruff: noqa: E501  (channel method constructions read best on one line)
"""Hostile input, generated: validation and the RPC edge never crash and never say INTERNAL."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh._proto import agent_pb2 as pb
from mesh.errors import ToolArgumentError, ToolExecutionError
from mesh.launcher import MeshProcesses
from mesh.tools import MemoTool, PrimeTool, celsius_to_fahrenheit, factorial

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
arguments = st.dictionaries(st.sampled_from(["n", "celsius", "action", "key", "value", "x", ""])
                            | st.text(max_size=20), json_values, max_size=4)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(arguments)
def test_tool_calls_either_run_or_fail_with_a_tool_error(args: dict[str, Any]) -> None:
    for tool in (factorial, celsius_to_fahrenheit, PrimeTool(time_limit_s=0.2)):
        try:
            tool.call(args)
        except (ToolArgumentError, ToolExecutionError) as err:
            assert err.message  # a message the model can read
        # anything else (TypeError, OverflowError, ...) fails the test


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arguments)
def test_the_memo_never_crashes(tmp_path: Any, args: dict[str, Any]) -> None:
    memo = MemoTool(tmp_path / "memo.db")
    try:
        memo.call(args)
    except (ToolArgumentError, ToolExecutionError) as err:
        assert err.message


@pytest.fixture(scope="module")
def math_service(mesh_dir: Any) -> Any:
    from mesh.services import load_mesh_config

    config = load_mesh_config(mesh_dir / "mesh.toml")
    with MeshProcesses(
        config, only=("math_specialist",), log_dir=mesh_dir / "logs-hostile"
    ) as mesh:
        channel = grpc.insecure_channel(mesh.services[0].address)
        yield channel


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.text(max_size=30) | st.sampled_from(["factorial", "smallest_prime_factor"]),
    raw=st.text(max_size=200) | json_values.map(json.dumps),
    task=st.text(max_size=300),
    max_steps=st.integers(min_value=-5, max_value=3),
)
def test_requests_get_a_clear_status_and_the_service_stays_up(
    math_service: Any, name: str, raw: str, task: str, max_steps: int
) -> None:
    call_tool = math_service.unary_unary("/mesh.v1.AgentService/CallTool",
                                         request_serializer=pb.CallToolRequest.SerializeToString,
                                         response_deserializer=pb.CallToolResponse.FromString)  # fmt: skip
    run = math_service.unary_unary("/mesh.v1.AgentService/Run",
                                   request_serializer=pb.RunRequest.SerializeToString,
                                   response_deserializer=pb.RunResponse.FromString)  # fmt: skip
    allowed = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
               grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED,
               grpc.StatusCode.FAILED_PRECONDITION}  # fmt: skip
    for call, request in ((call_tool, pb.CallToolRequest(name=name, arguments_json=raw)),
                          (run, pb.RunRequest(task=task, max_steps=max_steps))):  # fmt: skip
        try:
            call(request, timeout=30)
        except grpc.RpcError as err:
            assert err.code() in allowed, (err.code(), err.details())
            assert "Traceback" not in (err.details() or "")


def test_oversized_and_malformed_messages_are_refused(math_service: Any) -> None:
    raw_call = math_service.unary_unary("/mesh.v1.AgentService/CallTool")  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as err:
        raw_call(b"\xff\xff\xff garbage that is not a protobuf", timeout=10)
    assert err.value.code() in {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNKNOWN,
    }  # deserialization: gRPC's own answer
    with pytest.raises(grpc.RpcError) as err:
        raw_call(pb.CallToolRequest(name="factorial", arguments_json="x" * (9 * 1024 * 1024))
                 .SerializeToString(), timeout=10)  # fmt: skip
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # ...and the service still serves.
    ok = math_service.unary_unary("/mesh.v1.AgentService/CallTool",
                                  request_serializer=pb.CallToolRequest.SerializeToString,
                                  response_deserializer=pb.CallToolResponse.FromString)(
        pb.CallToolRequest(name="factorial", arguments_json='{"n": 4}'), timeout=10)  # fmt: skip
    assert json.loads(ok.result_json) == 24
