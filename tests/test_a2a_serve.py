"""A mesh agent served over A2A v1.0, called by the official SDK's client (and raw stubs).

The agent is the conformance agent (``services/a2a_conformance``): a real
tool-calling mesh agent, its model a script keyed by message id, served in
its own process with its card over HTTP. Every call below crosses gRPC into
the facade and the run model beneath it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesh.telemetry.trace_file import read_spans
from tests.support import free_port, serving, wait_until
from tests.test_images import PNG

ROOT = Path(__file__).parent.parent
T = TypeVar("T")

SERVE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from mesh import A2AOptions, serve
from services.a2a_conformance.agent import build
serve(build(), sys.argv[1], a2a=A2AOptions(http_address=sys.argv[2]))
"""
VERSION = (("a2a-version", "1.0"),)


class Served:
    def __init__(self, address: str, card_url: str, directory: Path) -> None:
        self.address, self.card_url, self.directory = address, card_url, directory
        self.channel = grpc.insecure_channel(address)
        self.stub = a2a_pb2_grpc.A2AServiceStub(self.channel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("a2a-serve")
    card = f"127.0.0.1:{free_port()}"
    with serving(SERVE, directory, card, log=directory / "service.log") as (address, _):
        served = Served(address, f"http://{card}", directory)
        yield served
        served.channel.close()


def sdk(served: Served, work: Callable[[Client], Awaitable[T]], *, streaming: bool = True) -> T:
    """``work`` done with the SDK's client, made from the served card (gRPC binding)."""

    async def run() -> T:
        config = ClientConfig(streaming=streaming, supported_protocol_bindings=["GRPC"],
                              grpc_channel_factory=grpc.aio.insecure_channel)  # fmt: skip
        client = await create_client(served.card_url, client_config=config)
        try:
            return await work(client)
        finally:
            await client.close()

    return asyncio.run(run())


def message(prefix: str, text: str = "hello", **fields: Any) -> a2a.Message:
    return a2a.Message(message_id=f"{prefix}-{uuid.uuid4().hex[:8]}", role=a2a.ROLE_USER,
                       parts=[a2a.Part(text=text)], **fields)  # fmt: skip


def send(served: Served, msg: a2a.Message, **config: Any) -> a2a.Task:
    request = a2a.SendMessageRequest(
        message=msg, configuration=a2a.SendMessageConfiguration(**config)
    )
    return served.stub.SendMessage(request, metadata=VERSION, timeout=30).task


def collect(served: Served, msg: a2a.Message) -> list[a2a.StreamResponse]:
    async def work(client: Client) -> list[a2a.StreamResponse]:
        return [r async for r in client.send_message(a2a.SendMessageRequest(message=msg))]

    return sdk(served, work)


def state(response: a2a.StreamResponse) -> int:
    kind = response.WhichOneof("payload")
    if kind == "task":
        return response.task.status.state
    return response.status_update.status.state if kind == "status_update" else -1


def error_info(err: grpc.RpcError) -> tuple[grpc.StatusCode, str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info)
    return err.code(), info.reason, info.domain


# ------------------------------------------------------------------------ the card


def test_the_card_describes_the_agent_its_tools_and_how_to_reach_it(agent: Served) -> None:
    response = httpx.get(f"{agent.card_url}/.well-known/agent-card.json", timeout=10)
    assert "max-age" in response.headers["cache-control"]
    assert response.headers["etag"] and response.headers["last-modified"]
    card = response.json()
    assert card["name"] == "a2a_conformance"
    assert card["supportedInterfaces"] == [{"url": agent.address, "protocolBinding": "GRPC",
                                            "protocolVersion": "1.0"}]  # fmt: skip
    assert card["capabilities"]["streaming"] is True
    assert not card["capabilities"].get("pushNotifications")
    assert {s["name"] for s in card["skills"]} == {"a2a_conformance", "user_input", "wait"}
    (extension,) = card["capabilities"]["extensions"]
    wait = extension["params"]["tools"]["wait"]
    assert wait["parameters"]["properties"]["seconds"]["type"] == "number"
    assert wait["parameters"]["required"] == ["seconds"]


# -------------------------------------------------------------------- send, stream


def test_a_blocking_send_returns_the_completed_task_with_its_answer(agent: Served) -> None:
    async def work(client: Client) -> list[a2a.StreamResponse]:
        msg = message("tck-artifact-text")
        return [r async for r in client.send_message(a2a.SendMessageRequest(message=msg))]

    (response,) = sdk(agent, work, streaming=False)
    task = response.task
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    assert [p.text for p in task.artifacts[0].parts] == ["Generated text content"]
    assert task.context_id and task.history[0].parts[0].text == "hello"
    usage = task.metadata["smolmesh"]["usage_by_agent"]["a2a_conformance"]
    assert usage["model_calls"] == 1


@pytest.mark.parametrize(("prefix", "check"), [
    ("tck-artifact-data", lambda p: json.loads(json.dumps(dict(p.data.struct_value)))
     == {"key": "value", "count": 42}),
    ("tck-artifact-file-url", lambda p: (p.url, p.filename, p.media_type)
     == ("https://example.com/output.txt", "output.txt", "text/plain")),
    ("tck-artifact-file", lambda p: (p.raw, p.filename, p.media_type)
     == (b"tck", "output.txt", "text/plain")),
])  # fmt: skip
def test_data_and_file_answers_are_data_and_file_parts(
    agent: Served, prefix: str, check: Callable[[a2a.Part], bool]
) -> None:
    task = send(agent, message(prefix))
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    assert check(task.artifacts[0].parts[0])


def test_data_parts_are_the_values_beside_the_task(agent: Served) -> None:
    values = struct_pb2.Value()
    values.struct_value.update({"city": "Oslo", "year": 2015})
    msg = message("smolmesh-echo", "Describe the city.")
    msg.parts.add(data=values)
    seen = send(agent, msg).artifacts[0].parts[0].text
    assert "Describe the city." in seen
    assert "city" in seen and "Oslo" in seen and "2015" in seen  # described to the model


def test_image_parts_are_shown_to_the_model(agent: Served) -> None:
    msg = message("smolmesh-echo", "What is in the picture?")
    msg.parts.add(raw=PNG, media_type="image/png", filename="grey.png")
    assert send(agent, msg).artifacts[0].parts[0].text.endswith("(1 image(s))")


def test_a_run_may_answer_with_a_message_instead_of_its_task(agent: Served) -> None:
    request = a2a.SendMessageRequest(message=message("tck-message-response"))
    reply = agent.stub.SendMessage(request, metadata=VERSION, timeout=30)
    assert reply.WhichOneof("payload") == "message"
    assert reply.message.role == a2a.ROLE_AGENT
    assert reply.message.parts[0].text == "Direct message response"


def test_a_stream_starts_with_the_task_and_ends_at_its_terminal_state(agent: Served) -> None:
    responses = collect(agent, message("tck-stream-001"))
    kinds = [r.WhichOneof("payload") for r in responses]
    assert kinds[0] == "task" and kinds[-1] == "status_update"
    assert state(responses[-1]) == a2a.TASK_STATE_COMPLETED
    artifact = next(r.artifact_update for r in responses if r.HasField("artifact_update"))
    assert artifact.artifact.parts[0].text == "Stream hello from TCK"
    assert kinds.index("artifact_update") < len(kinds) - 1  # the answer, then the end
    working = [
        r.status_update.status.message
        for r in responses
        if state(r) == a2a.TASK_STATE_WORKING and r.status_update.status.HasField("message")
    ]
    identity = working[0].metadata["smolmesh"]
    assert identity["agent"] == "a2a_conformance" and identity["depth"] == 0
    assert all(r.status_update.task_id == responses[0].task.id for r in responses[1:]
               if r.HasField("status_update"))  # fmt: skip


# ------------------------------------------------------------------ get and list


def test_tasks_are_listed_by_context_page_by_page_and_fetched(agent: Served) -> None:
    first = send(agent, message("tck-complete-task"))
    context = first.context_id
    for _ in range(2):
        send(agent, message("tck-complete-task", context_id=context))

    def page(token: str = "") -> a2a.ListTasksResponse:
        request = a2a.ListTasksRequest(context_id=context, page_size=2, page_token=token)
        return agent.stub.ListTasks(request, metadata=VERSION, timeout=10)

    one = page()
    two = page(one.next_page_token)
    assert (len(one.tasks), len(two.tasks), two.next_page_token) == (2, 1, "")
    assert one.total_size == 3 and one.page_size == 2
    ids = [t.id for t in [*one.tasks, *two.tasks]]
    assert ids[-1] == first.id and len(set(ids)) == 3  # newest first
    assert not any(t.artifacts for t in one.tasks)  # include_artifacts is off by default
    got = agent.stub.GetTask(a2a.GetTaskRequest(id=first.id, history_length=0),
                             metadata=VERSION, timeout=10)  # fmt: skip
    assert got.status.state == a2a.TASK_STATE_COMPLETED and not got.history
    assert got.artifacts[0].parts[0].text == "Hello from TCK"


def test_the_most_recently_updated_task_is_listed_first(agent: Served) -> None:
    older = send(agent, message("tck-input-required"))  # created first, waits
    newer = send(agent, message("tck-complete-task"))  # created and ended after it
    send(agent, message("tck-complete-task", task_id=older.id))  # the older one ends last

    def order() -> list[str]:
        listed = agent.stub.ListTasks(a2a.ListTasksRequest(page_size=100), metadata=VERSION,
                                      timeout=10)  # fmt: skip
        return [t.id for t in listed.tasks if t.id in (older.id, newer.id)]

    assert order() == [older.id, newer.id]


def test_list_filters_by_state(agent: Served) -> None:
    waiting = send(agent, message("tck-input-required"))
    listed = agent.stub.ListTasks(
        a2a.ListTasksRequest(status=a2a.TASK_STATE_INPUT_REQUIRED, page_size=100),
        metadata=VERSION, timeout=10,
    )  # fmt: skip
    assert waiting.id in {t.id for t in listed.tasks}
    assert all(t.status.state == a2a.TASK_STATE_INPUT_REQUIRED for t in listed.tasks)
    agent.stub.CancelTask(a2a.CancelTaskRequest(id=waiting.id), metadata=VERSION, timeout=15)


# -------------------------------------------------------------------- multi-turn


def test_a_question_pauses_the_task_and_the_answer_resumes_it(agent: Served) -> None:
    first = message("tck-input-required")
    asked = send(agent, first)
    assert asked.status.state == a2a.TASK_STATE_INPUT_REQUIRED
    assert asked.status.message.parts[0].text == "What should I do next?"
    second = message("tck-input-required", "detail one", task_id=asked.id)
    again = send(agent, second)
    assert (again.id, again.status.state) == (asked.id, a2a.TASK_STATE_INPUT_REQUIRED)
    third = message("tck-complete-task", "go on", task_id=asked.id)
    done = send(agent, third)
    assert (done.id, done.context_id) == (asked.id, asked.context_id)
    assert done.status.state == a2a.TASK_STATE_COMPLETED
    said = [(m.role, m.parts[0].text) for m in done.history]
    assert [text for role, text in said if role == a2a.ROLE_USER] == [
        "hello", "detail one", "go on"]  # fmt: skip
    users = [m.message_id for m in done.history if m.role == a2a.ROLE_USER]
    assert users == [first.message_id, second.message_id, third.message_id]  # as sent
    # The next message in the context is a new task of the same conversation.
    later = send(agent, message("tck-complete-task", context_id=asked.context_id))
    assert later.id != asked.id and later.context_id == asked.context_id


def test_a_dropped_stream_is_rejoined_with_subscribe(agent: Served) -> None:
    async def work(client: Client) -> tuple[str, list[a2a.StreamResponse]]:
        msg = message("test-resubscribe-message-id")
        stream = client.send_message(a2a.SendMessageRequest(message=msg))
        first = await anext(stream)
        await stream.aclose()  # the client goes away; the task lives on
        task_id = first.task.id
        got = await client.get_task(a2a.GetTaskRequest(id=task_id))
        assert got.status.state in (a2a.TASK_STATE_SUBMITTED, a2a.TASK_STATE_WORKING)
        rejoined = client.subscribe(a2a.SubscribeToTaskRequest(id=task_id))
        return task_id, [r async for r in rejoined]

    task_id, responses = sdk(agent, work)
    assert responses[0].task.id == task_id
    assert state(responses[-1]) == a2a.TASK_STATE_COMPLETED


# ------------------------------------------------------------------------ cancel


def test_cancel_stops_the_run_and_is_idempotent(agent: Served) -> None:
    started = send(agent, message("test-resubscribe-message-id"), return_immediately=True)
    assert started.status.state in (a2a.TASK_STATE_SUBMITTED, a2a.TASK_STATE_WORKING)
    began = time.monotonic()
    cancelled = agent.stub.CancelTask(a2a.CancelTaskRequest(id=started.id), metadata=VERSION,
                                      timeout=15)  # fmt: skip
    assert cancelled.status.state == a2a.TASK_STATE_CANCELED
    assert time.monotonic() - began < 3  # it did not wait out the task's 4 s of work
    again = agent.stub.CancelTask(a2a.CancelTaskRequest(id=started.id), metadata=VERSION,
                                  timeout=15)  # fmt: skip
    assert again.status.state == a2a.TASK_STATE_CANCELED
    done = send(agent, message("tck-complete-task"))
    with pytest.raises(grpc.RpcError) as err:
        agent.stub.CancelTask(a2a.CancelTaskRequest(id=done.id), metadata=VERSION, timeout=10)
    assert error_info(err.value) == (grpc.StatusCode.FAILED_PRECONDITION, "TASK_NOT_CANCELABLE",
                                     "a2a-protocol.org")  # fmt: skip


def test_the_calls_deadline_is_the_runs(agent: Served) -> None:
    context = f"deadline-{uuid.uuid4().hex[:8]}"
    msg = message("test-resubscribe-message-id", context_id=context)  # 4 s of work
    with pytest.raises(grpc.RpcError) as err:
        agent.stub.SendMessage(a2a.SendMessageRequest(message=msg), metadata=VERSION, timeout=1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def ended() -> a2a.Task | None:
        listed = agent.stub.ListTasks(a2a.ListTasksRequest(context_id=context),
                                      metadata=VERSION, timeout=10)  # fmt: skip
        over = [t for t in listed.tasks if t.status.state == a2a.TASK_STATE_CANCELED]
        return over[0] if over else None

    task = wait_until(ended, timeout_s=10)  # stopped at its deadline, not after its 4 s
    assert task.status.message.parts[0].text.startswith("deadline_exceeded")


# ------------------------------------------------------------------------ errors


def _call(served: Served, method: str, request: Any, metadata: Any = VERSION) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        result = getattr(served.stub, method)(request, metadata=metadata, timeout=10)
        if not hasattr(result, "ByteSize"):  # a stream: its error comes with the first read
            list(result)
    return err.value


def test_every_error_has_the_specs_status_and_error_info(agent: Served) -> None:
    done = send(agent, message("tck-complete-task"))
    pdf = a2a.Message(
        message_id="m-pdf",
        role=a2a.ROLE_USER,
        parts=[a2a.Part(text="read this"), a2a.Part(raw=b"%PDF-1.4", media_type="application/pdf")],
    )
    listed, tool_named = struct_pb2.Value(), struct_pb2.Value()
    listed.list_value.values.add().number_value = 1
    tool_named.struct_value.update({"wait": 1})  # a value may not take a tool's name
    data = [a2a.Message(message_id=f"m-data-{n}", role=a2a.ROLE_USER, parts=[
        a2a.Part(text="with data"), a2a.Part(data=value)]) for n, value in enumerate(
            [listed, tool_named])]  # fmt: skip
    fake_png = a2a.Message(
        message_id="m-png",
        role=a2a.ROLE_USER,
        parts=[a2a.Part(text="look"), a2a.Part(raw=b"not a png", media_type="image/png")],
    )
    data.append(fake_png)
    cases: list[tuple[str, Any, Any, grpc.StatusCode, str]] = [
        *[("SendMessage", a2a.SendMessageRequest(message=m), VERSION,
           grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS") for m in data],
        ("GetTask", a2a.GetTaskRequest(id="no-such-task"), VERSION,
         grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND"),
        ("CancelTask", a2a.CancelTaskRequest(id="no-such-task"), VERSION,
         grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND"),
        ("SubscribeToTask", a2a.SubscribeToTaskRequest(id=done.id), VERSION,
         grpc.StatusCode.UNIMPLEMENTED, "UNSUPPORTED_OPERATION"),
        ("SendMessage", a2a.SendMessageRequest(message=message("x", task_id=done.id)), VERSION,
         grpc.StatusCode.UNIMPLEMENTED, "UNSUPPORTED_OPERATION"),
        ("SendMessage", a2a.SendMessageRequest(
            message=message("x", task_id=done.id, context_id="another-context")), VERSION,
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS"),
        ("SendMessage", a2a.SendMessageRequest(message=pdf), VERSION,
         grpc.StatusCode.INVALID_ARGUMENT, "CONTENT_TYPE_NOT_SUPPORTED"),
        ("SendMessage", a2a.SendMessageRequest(message=a2a.Message(message_id="m", parts=[])),
         VERSION, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS"),
        ("SendMessage", a2a.SendMessageRequest(message=message("tck-complete-task")), (),
         grpc.StatusCode.UNIMPLEMENTED, "VERSION_NOT_SUPPORTED"),
        ("SendStreamingMessage", a2a.SendMessageRequest(message=message("tck-complete-task")),
         (("a2a-version", "99.0"),), grpc.StatusCode.UNIMPLEMENTED, "VERSION_NOT_SUPPORTED"),
        ("ListTasks", a2a.ListTasksRequest(page_size=1000), VERSION,
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS"),
        ("ListTasks", a2a.ListTasksRequest(page_token="not-ours"), VERSION,
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS"),
        ("CreateTaskPushNotificationConfig",
         a2a.TaskPushNotificationConfig(task_id=done.id, url="https://example.com/hook"),
         VERSION, grpc.StatusCode.UNIMPLEMENTED, "PUSH_NOTIFICATION_NOT_SUPPORTED"),
        ("ListTaskPushNotificationConfigs",
         a2a.ListTaskPushNotificationConfigsRequest(task_id=done.id), VERSION,
         grpc.StatusCode.UNIMPLEMENTED, "PUSH_NOTIFICATION_NOT_SUPPORTED"),
        ("GetExtendedAgentCard", a2a.GetExtendedAgentCardRequest(), VERSION,
         grpc.StatusCode.UNIMPLEMENTED, "UNSUPPORTED_OPERATION"),
    ]  # fmt: skip
    for method, request, metadata, code, reason in cases:
        got = error_info(_call(agent, method, request, metadata))
        assert got == (code, reason, "a2a-protocol.org"), (method, request)


def test_bytes_that_are_no_request_are_refused_not_crashed_on(agent: Served) -> None:
    garbage = agent.channel.unary_unary("/lf.a2a.v1.A2AService/GetTask")
    with pytest.raises(grpc.RpcError) as err:
        garbage(b"\xff\xff\xff", metadata=VERSION, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in (err.value.details() or "")


# -------------------------------------------------------------------------- auth

SERVE_WITH_TOKENS = SERVE.replace(
    "serve(build(), sys.argv[1], a2a=A2AOptions(http_address=sys.argv[2]))",
    "from mesh.rpc.security import MeshSecurity\n"
    "serve(build(), sys.argv[1], a2a=A2AOptions(http_address=sys.argv[2]),\n"
    "      security=MeshSecurity(tokens={'alice': 'a' * 32}))",
)


def test_a_mesh_with_tokens_asks_a2a_callers_for_one(tmp_path: Path) -> None:
    card = f"127.0.0.1:{free_port()}"
    with (
        serving(SERVE_WITH_TOKENS, tmp_path, card) as (address, _),
        grpc.insecure_channel(address) as channel,
    ):
        stub = a2a_pb2_grpc.A2AServiceStub(channel)  # type: ignore[no-untyped-call]
        request = a2a.SendMessageRequest(message=message("tck-complete-task"))
        with pytest.raises(grpc.RpcError) as err:
            stub.SendMessage(request, metadata=VERSION, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = ("authorization", "Bearer " + "a" * 32)
        task = stub.SendMessage(request, metadata=(*VERSION, token), timeout=30).task
        assert task.status.state == a2a.TASK_STATE_COMPLETED
        declared = httpx.get(f"http://{card}/.well-known/agent-card.json", timeout=10).json()
        assert "bearer" in declared["securitySchemes"]


# ------------------------------------------------------------------------- trace


def test_the_callers_trace_context_parents_the_run(tmp_path: Path) -> None:
    card = f"127.0.0.1:{free_port()}"
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    with serving(SERVE, tmp_path, card) as (address, _), grpc.insecure_channel(address) as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)  # type: ignore[no-untyped-call]
        request = a2a.SendMessageRequest(message=message("tck-complete-task"))
        stub.SendMessage(request, metadata=(*VERSION, ("traceparent", traceparent)), timeout=30)
    spans = [s for s in read_spans(tmp_path / "t") if s.trace_id == trace_id]
    names = {s.name for s in spans}
    assert any("SendMessage" in name for name in names), names
    assert {"invoke_agent a2a_conformance", "execute_tool final_answer"} <= names


def test_no_call_above_put_a_traceback_in_the_service_log(agent: Served) -> None:
    log = (agent.directory / "service.log").read_text()  # warnings and errors, if any
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
