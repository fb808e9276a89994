"""Hostile input, generated: validation and the RPC edge never crash and never say INTERNAL."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.errors import ToolArgumentError, ToolExecutionError
from mesh.launcher import MeshProcesses
from mesh.rpc.status import MAX_STATUS_MESSAGE_CHARS
from mesh.tools import MemoTool, PrimeTool, celsius_to_fahrenheit, factorial
from mesh.tools.schema import InputSpec, validate_arguments

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


TYPES = st.sampled_from(["string", "integer", "number", "boolean", "array", "object", "any"])


@st.composite
def input_specs(draw: st.DrawFn) -> InputSpec:
    """Any input a tool may declare: every type, nullable, enums, typed items, defaults."""
    kind = draw(TYPES)
    enum = draw(st.none() | st.lists(json_values, min_size=1, max_size=4).map(tuple))
    default = draw(st.fixed_dictionaries({}, optional={"default": json_values}))  # or none
    items = draw(TYPES) if kind == "array" and draw(st.booleans()) else None
    name = draw(st.sampled_from(["n", "x", "query", "value", "a_b"]))
    return InputSpec(name, kind, "d", nullable=draw(st.booleans()), enum=enum, items=items,
                     **default)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(input_specs(), max_size=4, unique_by=lambda s: s.name), arguments)
def test_any_schema_either_accepts_a_conforming_call_or_says_why(
    inputs: list[InputSpec], args: dict[str, Any]
) -> None:
    try:
        result = validate_arguments("tool", inputs, args)
    except ToolArgumentError as err:
        assert err.message.startswith("invalid call to tool") or "arguments must be" in err.message
        return
    assert set(result) == {spec.name for spec in inputs}  # nothing unknown got through
    for spec in inputs:
        value = result[spec.name]
        if spec.name not in args:
            assert not spec.required and value is spec.default
        elif value is not None:
            assert conforms(spec.type, value), (spec, value)  # it has the declared type
            if spec.enum is not None:
                assert value in spec.enum
            if spec.items:
                assert all(conforms(spec.items, item) for item in value)


def conforms(type_name: str, value: Any) -> bool:
    """The JSON-schema meaning of a type, written out independently of the validator."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {
        "string": isinstance(value, str),
        "integer": number and isinstance(value, int),
        "number": number and math.isfinite(value),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
        "any": True,
    }[type_name]


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


MATH_TASK = "What is the smallest prime factor of 2015? Answer with the number only."


class Bystander:
    """Another caller, on a channel of its own, doing real work (a jailed run, a tool call)
    back to back for as long as the hostile requests go on. Each failure is kept."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_me, daemon=True)
        self.done = 0
        self.failures: list[str] = []

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._channel.close()

    def _serve_me(self) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        while not self._stop.is_set():
            try:
                run = stub.Run(pb.RunRequest(task=MATH_TASK), timeout=30)
                factorial_5 = pb.CallToolRequest(name="factorial", arguments_json='{"n": 5}')
                tool = stub.CallTool(factorial_5, timeout=30)
                if (run.answer_json, tool.result_json) != ("5", "120"):
                    self.failures.append(f"wrong answers: {run.answer_json}, {tool.result_json}")
            except grpc.RpcError as err:
                self.failures.append(f"{err.code().name}: {err.details()}")
            self.done += 1


@pytest.fixture(scope="module")
def served(mesh_dir: Any) -> Any:
    """The math specialist, and a bystander calling it all along."""
    from mesh.project import load_mesh_config

    config = load_mesh_config(mesh_dir / "mesh.toml")
    with MeshProcesses(
        config, only=("math_specialist",), log_dir=mesh_dir / "logs-hostile"
    ) as mesh:
        channel = grpc.insecure_channel(mesh.services[0].address)
        with Bystander(mesh.services[0].address) as bystander:
            yield channel, bystander


@pytest.fixture
def math_service(served: Any) -> Any:
    """The hostile caller's channel; after each test, the bystander must not have suffered."""
    channel, bystander = served
    yield channel
    assert not bystander.failures, bystander.failures[:5]


# Strings that have hurt parsers before: empty, huge, deeply nested JSON, names that exist.
HOSTILE_STRINGS = st.sampled_from([
    "", " ", "factorial", "final_answer", "math_specialist", "{}", "[]", "null", '{"n": 5}',
    '{"n": 1e999}', '{"n": -1}', "127.0.0.1:1", "x" * 200_000, "[" * 50_000 + "]" * 50_000,
    '{"a": ' * 20_000 + "1" + "}" * 20_000, "\x00\ud7ff\U0010ffff", "../../etc/passwd",
])  # fmt: skip
SCALARS = {
    FieldDescriptor.TYPE_STRING: st.text(max_size=100) | HOSTILE_STRINGS,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=100)
    | st.sampled_from(
        [  # Image.data
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\x89PNG\r\n\x1a\n" + b"\x00" * (4 * 2**20 + 1),
            b"GIF89a" + b"\xff" * 64,
            b"RIFF\x00\x00\x00\x00WEBP",
        ]
    ),
}


def messages(descriptor: Any) -> Any:
    """Any message of ``descriptor``'s type: random and boundary values in every field."""
    fields = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            value = st.deferred(lambda f=field: messages(f.message_type))
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = st.sampled_from([v.number for v in field.enum_type.values] + [99])
        else:
            value = SCALARS[field.type]
        fields[field.name] = st.lists(value, max_size=3) if field.is_repeated else value
    message = message_factory.GetMessageClass(descriptor)  # well-known types too
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: message(**kw))


SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"]
CALLS = st.one_of(*[st.tuples(st.just(m), messages(m.input_type)) for m in SERVICE.methods])
CLEAR = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
         grpc.StatusCode.ALREADY_EXISTS,
         grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED,
         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED}  # fmt: skip


def call_raw(channel: grpc.Channel, method: Any, data: bytes) -> tuple[grpc.StatusCode, str]:
    """Send ``data`` as the request of ``method``; the status and message it got."""
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            list(channel.unary_stream(path)(data, timeout=30))
        else:
            channel.unary_unary(path)(data, timeout=30)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def still_serving(channel: grpc.Channel) -> bool:
    reply = channel.unary_unary(f"/{SERVICE.full_name}/Describe",
                                response_deserializer=pb.DescribeResponse.FromString)(
        pb.DescribeRequest().SerializeToString(), timeout=10)  # fmt: skip
    return bool(reply.card.name == "math_specialist")


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(CALLS)
@example(
    (
        SERVICE.methods_by_name["CallTool"],
        pb.CallToolRequest(name="factorial", arguments_json="[" * 50_000 + "]" * 50_000),
    )
)
@example((SERVICE.methods_by_name["Run"], pb.RunRequest(task="x" * 200_000)))
def test_every_request_gets_a_clear_status_and_the_service_stays_up(
    math_service: Any, call: tuple[Any, Any]
) -> None:
    method, request = call
    code, details = call_raw(math_service, method, request.SerializeToString())
    assert code in CLEAR, (method.name, code, details[:300])
    assert "Traceback" not in details
    assert still_serving(math_service)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(list(SERVICE.methods)), st.binary(max_size=300))
def test_random_bytes_are_invalid_arguments_or_ignored_unknown_fields(
    math_service: Any, method: Any, data: bytes
) -> None:
    code, details = call_raw(math_service, method, data)
    assert code in CLEAR, (method.name, code, details[:300])
    assert still_serving(math_service)


def test_oversized_and_malformed_messages_are_refused(math_service: Any) -> None:
    raw_call = math_service.unary_unary("/smolmesh.v1.AgentService/CallTool")  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as err:
        raw_call(b"\xff\xff\xff garbage that is not a protobuf", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid smolmesh.v1.CallToolRequest" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        raw_call(pb.CallToolRequest(name="factorial", arguments_json="x" * (9 * 1024 * 1024))
                 .SerializeToString(), timeout=10)  # fmt: skip
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # ...and the service still serves.
    ok = math_service.unary_unary("/smolmesh.v1.AgentService/CallTool",
                                  request_serializer=pb.CallToolRequest.SerializeToString,
                                  response_deserializer=pb.CallToolResponse.FromString)(
        pb.CallToolRequest(name="factorial", arguments_json='{"n": 4}'), timeout=10)  # fmt: skip
    assert json.loads(ok.result_json) == 24


def test_errors_never_echo_unbounded_input(math_service: Any) -> None:
    """A huge name or run id gets its real status (NOT_FOUND), not a metadata overflow."""
    stub = agent_pb2_grpc.AgentServiceStub(math_service)  # type: ignore[no-untyped-call]
    for method, request in (
        (stub.Cancel, pb.CancelRequest(run_id="x" * 100_000)),
        (stub.CallTool, pb.CallToolRequest(name="x" * 100_000, arguments_json="{}")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            method(request, timeout=10)
        assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        assert len(err.value.details() or "") <= MAX_STATUS_MESSAGE_CHARS


def test_json_nested_beyond_64_levels_is_refused(math_service: Any) -> None:
    stub = agent_pb2_grpc.AgentServiceStub(math_service)  # type: ignore[no-untyped-call]
    deep = '{"n": ' + "[" * 100 + "]" * 100 + "}"
    with pytest.raises(grpc.RpcError) as err:
        stub.CallTool(pb.CallToolRequest(name="factorial", arguments_json=deep), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested too deeply (over 64 levels)" in (err.value.details() or "")
    fine = '{"n": 5}'
    answer = stub.CallTool(pb.CallToolRequest(name="factorial", arguments_json=fine), timeout=10)
    assert json.loads(answer.result_json) == 120


@pytest.mark.parametrize("field", ["run_id", "parent_run_id"])
@pytest.mark.parametrize("value", ["r" * 200, "run id with spaces", "../../x", "\x00", "é"])
def test_identifiers_a_caller_gives_are_bounded(math_service: Any, field: str, value: str) -> None:
    """Run ids are copied into every audit event, span and ledger row: a long or strange one
    is refused before the run starts (nothing is written for it)."""
    stub = agent_pb2_grpc.AgentServiceStub(math_service)  # type: ignore[no-untyped-call]
    request = pb.RunRequest(task="What is 5!?", **{field: value})
    with pytest.raises(grpc.RpcError) as err:
        stub.Run(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field} must be" in (err.value.details() or "")


def test_the_bystander_was_served_all_along(served: Any) -> None:
    _, bystander = served
    assert bystander.done >= 10 and not bystander.failures  # runs through the jail, meanwhile
