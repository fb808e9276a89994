# ruff: noqa: E501  (the parametrized config cases read best one per line)
"""``A2AAgent``: an A2A agent of any framework as a managed agent, through real processes.

The remote agent is ``tests/a2a_reference_server.py``, built with the A2A SDK alone and
serving the gRPC binding; the manager is a mesh agent served by ``mesh serve`` from a
mesh.toml that lists the A2A agent in ``a2a_agents``, its model replayed. What the
reference server saw (calls, their metadata, cancels) is read from its ``/record``, and
a task's state with its own ``GetTask``: never through smolmesh.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2, a2a_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.context import RunContext
from mesh.agents.events import (
    AgentEvent,
    FinalAnswer,
    Observation,
    RunFinished,
    RunStarted,
    ToolCallFinished,
)
from mesh.errors import (
    AgentUnavailableError,
    ConfigError,
    DeadlineExceededError,
    MeshError,
    RemoteAgentError,
    RunCancelledError,
)
from mesh.launcher import MeshProcesses
from mesh.project import build_agent, load_mesh_config
from mesh.rpc.a2a import A2AAgent
from mesh.rpc.a2a.remote_channel import grpc_target
from mesh.rpc.a2a.remote_task import MAX_RELAYED_EVENTS, TaskRelay, answer_of
from mesh.rpc.client import AgentClient
from mesh.run_scope import current_scope
from tests.invariants import stream_problems
from tests.mesh_setup import cassette_lines
from tests.support import code, free_port, wait_until

SERVER = Path(__file__).parent / "a2a_reference_server.py"
NAME = "reference_echo_agent"
"""The reference agent's tool name: its card's name, "Reference Echo Agent", made one."""

ECHO_TASK = "Have the A2A agent echo a greeting."
SLOW_TASK = "Have the A2A agent work slowly."
FAIL_TASK = "Have the A2A agent fail, then report it."
CASSETTE = (
    cassette_lines(ECHO_TASK, code(f"answer = {NAME}(task='hello from the manager')\n"
                                   "final_answer(answer)"))
    + cassette_lines(SLOW_TASK, code(f"{NAME}(task='slow, please')"))
    + cassette_lines(FAIL_TASK, code(f"{NAME}(task='fail, please')"),
                     code("final_answer('The A2A agent failed; I report it.')"))
)  # fmt: skip
MESH = """
[mesh]
entry = "manager"
replay = "always"
[agents.manager]
kind = "code"
description = "Delegates to an agent of another framework."
address = "127.0.0.1:0"
cassette = "manager.jsonl"
[[agents.manager.a2a_agents]]
card_url = "{card_url}"
"""


@dataclass(frozen=True)
class Reference:
    """A reference A2A agent in its own process."""

    grpc_port: int
    base_url: str

    def record(self) -> list[dict[str, Any]]:
        """What it saw: calls (method, traceparent, authorization), tasks run, cancels."""
        reply = httpx.get(f"{self.base_url}/record", timeout=5)
        return list(reply.json())

    def state(self, task_id: str) -> int:
        """The task's state, as the agent's own ``GetTask`` says."""
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = a2a_pb2_grpc.A2AServiceStub(channel)  # type: ignore[no-untyped-call]
            task = stub.GetTask(a2a_pb2.GetTaskRequest(id=task_id), timeout=5,
                                metadata=(("a2a-version", "1.0"),))  # fmt: skip
        return int(task.status.state)

    def cancelled(self, task_id: str) -> bool:
        """Whether the agent was asked to cancel the task and it is cancelled."""
        asked = {"kind": "cancel", "task_id": task_id} in self.record()
        return asked and self.state(task_id) == a2a_pb2.TASK_STATE_CANCELED


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    yield from _serve_reference(tmp_path_factory.mktemp("a2a-reference"))


@pytest.fixture(scope="module")
def polled_reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    """The same agent, but its card says it does not stream."""
    yield from _serve_reference(tmp_path_factory.mktemp("a2a-polled"), "--no-streaming")


def _serve_reference(directory: Path, *flags: str) -> Iterator[Reference]:
    grpc_port, http_port = free_port(), free_port()
    log = directory / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, str(SERVER), str(grpc_port), str(http_port),
                                    *flags], stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(lambda: process.poll() is not None or _serves(base), timeout_s=20)
        assert process.poll() is None, log.read_text()[-2000:]
        yield Reference(grpc_port, base)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _serves(base: str) -> bool:
    try:
        return httpx.get(f"{base}/.well-known/agent-card.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def manager(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The manager, served by ``mesh serve`` from a mesh.toml that names the A2A agent by
    its card alone: its name and description come from the card."""
    directory = tmp_path_factory.mktemp("a2a-mesh")
    (directory / "mesh.toml").write_text(MESH.format(card_url=reference.base_url))
    (directory / "manager.jsonl").write_text(CASSETTE)
    config = load_mesh_config(directory / "mesh.toml")
    with MeshProcesses(config, log_dir=directory / "logs") as mesh:
        yield mesh.addresses["manager"][0]


def nested(events: list[AgentEvent]) -> list[AgentEvent]:
    return [e for e in events if e.depth == 1 and e.agent == NAME]


def task_id(events: list[AgentEvent]) -> str:
    """The A2A task's id, as the relay announced it."""
    for event in events:
        if isinstance(event, Observation) and (found := re.match(r"A2A task (\S+) started",
                                                                  event.text)):  # fmt: skip
            return found.group(1)
    raise AssertionError("no A2A task started")


# --------------------------------------------------------------- through processes


def test_a_manager_delegates_to_the_a2a_agent_and_shows_its_task_nested(manager: str) -> None:
    with AgentClient(manager, agent="manager") as client:
        events = list(client.run_stream(ECHO_TASK, timeout_s=30))
    top = [e for e in events if isinstance(e, FinalAnswer) and e.depth == 0]
    assert [e.answer for e in top] == ["Echo: hello from the manager"]
    child = nested(events)
    started = child[0]
    assert isinstance(started, RunStarted) and started.task == "hello from the manager"
    manager_run = next(e for e in events if isinstance(e, RunStarted) and e.depth == 0)
    assert started.parent_run_id == manager_run.run_id
    texts = [e.text for e in child if isinstance(e, Observation)]
    assert texts[1:] == ["working: Thinking.", "artifact answer: Echo: hello from the manager"]
    assert [type(e).__name__ for e in child[-2:]] == ["FinalAnswer", "RunFinished"]
    assert isinstance(child[-1], RunFinished) and child[-1].error is None
    assert stream_problems(events) == []


def test_cancelling_the_manager_cancels_the_a2a_task(manager: str, reference: Reference) -> None:
    with AgentClient(manager, agent="manager") as client:
        stream = client.run_stream(SLOW_TASK, run_id="a2a-cancel-1", timeout_s=30)
        seen: list[AgentEvent] = []
        for event in stream:
            seen.append(event)
            if isinstance(event, Observation) and event.text == "working: Working slowly.":
                break
        started = time.monotonic()
        client.cancel("a2a-cancel-1")
        with pytest.raises(RunCancelledError):
            seen += list(stream)
    task = task_id(seen)
    wait_until(lambda: reference.cancelled(task), timeout_s=10)
    assert time.monotonic() - started < 5  # the executor was cancelled, not left to its 60 s


def test_a_deadline_shorter_than_the_task_ends_the_call_and_cancels_it(
    manager: str, reference: Reference
) -> None:
    started = time.monotonic()
    seen: list[AgentEvent] = []
    with AgentClient(manager, agent="manager") as client, pytest.raises(DeadlineExceededError):
        for event in client.run_stream(SLOW_TASK, timeout_s=2.5):
            seen.append(event)
    assert time.monotonic() - started < 6
    task = task_id(seen)
    wait_until(lambda: reference.cancelled(task), timeout_s=10)


def test_a_failed_a2a_task_is_an_observation_and_the_run_goes_on(manager: str) -> None:
    with AgentClient(manager, agent="manager") as client:
        events = list(client.run_stream(FAIL_TASK, timeout_s=30))
    top = [e.answer for e in events if isinstance(e, FinalAnswer) and e.depth == 0]
    assert top == ["The A2A agent failed; I report it."]
    call = next(e for e in events if isinstance(e, ToolCallFinished) and e.name == NAME)
    assert call.error is not None and call.depth == 0
    assert 'failed the task: "The reference agent failed on purpose."' in call.result
    child_end = nested(events)[-1]
    assert isinstance(child_end, RunFinished) and child_end.error is not None
    assert child_end.error.reason == "remote_agent_error"
    assert stream_problems(events) == []


def test_the_callers_trace_reaches_the_a2a_agent(manager: str, reference: Reference) -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with grpc.insecure_channel(manager) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.Run(pb.RunRequest(task=ECHO_TASK), timeout=30,
                         metadata=(("traceparent", f"00-{trace_id}-{span_id}-01"),))  # fmt: skip
    assert reply.answer_text == "Echo: hello from the manager"
    sent = [c["traceparent"] for c in reference.record() if c["kind"] == "call"]
    assert f"-{trace_id}-" in sent[-1]  # the same trace, under a span of the manager's
    assert span_id not in sent[-1]


# --------------------------------------------------------------- in this process


@pytest.fixture
def parent() -> Iterator[tuple[RunContext, list[AgentEvent]]]:
    """A run of this process's, as a manager's step would be: A2A calls become its child."""
    events: list[AgentEvent] = []
    run = RunContext(agent="boss", sink=events.append)
    token = current_scope.set(run)
    yield run, events
    current_scope.reset(token)


@pytest.mark.parametrize(
    ("task", "args", "answer"),
    [
        ("hello", None, "Echo: hello"),
        ("data", None, {"answer": 42, "primes": [2, 3, 5], "note": "data"}),
        ("args", {"rows": [1, 2], "label": "x"}, [{"rows": [1, 2], "label": "x"}]),
    ],
)
def test_answers_are_text_or_json(
    reference: Reference, task: str, args: dict[str, Any] | None, answer: Any
) -> None:
    agent = A2AAgent(reference.base_url)
    try:
        assert agent.run(task, additional_args=args) == answer
    finally:
        agent.close()


@pytest.mark.parametrize(
    ("task", "says"),
    [
        ("fail", 'failed the task: "The reference agent failed on purpose."'),
        ("reject", 'rejected the task: "I do not do that."'),
        ("ask", 'asked for input instead of answering: "Which city do you mean?"'),
        ("huge", "answered with over 1024 KiB"),
    ],
)
def test_a_task_that_does_not_complete_is_a_remote_agent_error(
    reference: Reference, parent: tuple[RunContext, list[AgentEvent]], task: str, says: str
) -> None:
    agent = A2AAgent(f"{reference.base_url}/.well-known/agent-card.json", "ref", "Echoes.")
    try:
        with pytest.raises(RemoteAgentError, match=re.escape(says)) as raised:
            agent.run(task)
    finally:
        agent.close()
    assert len(str(raised.value)) < 700
    events = parent[1]
    assert isinstance(events[0], RunStarted) and events[0].depth == 1
    assert isinstance(events[-1], RunFinished) and events[-1].error is not None
    assert all(len(getattr(e, "text", "")) <= 2000 for e in events)
    assert stream_problems(events) == []


def test_an_agent_that_does_not_stream_is_polled_and_cancelled_too(
    polled_reference: Reference, parent: tuple[RunContext, list[AgentEvent]]
) -> None:
    run, events = parent
    agent = A2AAgent(polled_reference.base_url)
    try:
        assert agent.run("hello") == "Echo: hello"
        events.clear()
        threading.Timer(0.5, run.cancel).start()
        with pytest.raises(RunCancelledError):
            agent.run("slow")
    finally:
        agent.close()
    assert polled_reference.cancelled(task_id(events))
    assert stream_problems(events) == []
    calls = {c["method"] for c in polled_reference.record() if c["kind"] == "call"}
    assert {"SendMessage", "GetTask", "CancelTask"} <= calls


def test_an_agent_without_grpc_is_called_over_json_rpc(
    reference: Reference, parent: tuple[RunContext, list[AgentEvent]]
) -> None:
    run, events = parent
    agent = A2AAgent(f"{reference.base_url}/json-rpc", token="json-token")
    ours = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4737, 0x00F067AA0BA902B8, is_remote=False,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
    try:
        with trace.use_span(NonRecordingSpan(ours)):
            assert agent.run("data") == {"answer": 42, "primes": [2, 3, 5], "note": "data"}
            events.clear()
            threading.Timer(0.5, run.cancel).start()
            with pytest.raises(RunCancelledError):
                agent.run("slow")
    finally:
        agent.close()
    calls = [c for c in reference.record() if c["kind"] == "call"][-3:]  # send, send, cancel
    assert reference.cancelled(task_id(events))
    assert {c["method"] for c in calls} == {"jsonrpc"}
    assert {c["authorization"] for c in calls} == {"Bearer json-token"}
    assert all("-4bf92f3577b34da6a3ce929d0e0e4737-" in c["traceparent"] for c in calls)


def test_a_token_travels_as_bearer_and_close_stops_the_call(reference: Reference) -> None:
    loops = {t for t in threading.enumerate() if t.name.startswith("a2a-")}
    agent = A2AAgent(reference.base_url, timeout_s=30, token="s3cret-token")
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            agent.run("slow")
        except MeshError as err:
            outcome.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: any(r["kind"] == "execute" and r["text"] == "slow"
                           for r in reference.record()[-3:]))  # fmt: skip
    agent.close()
    caller.join(10)
    assert isinstance(outcome[0], AgentUnavailableError) and "closed" in str(outcome[0])
    calls = [r for r in reference.record() if r["kind"] == "call"]
    assert calls[-1]["method"] == "CancelTask"
    assert {c["authorization"] for c in calls[-2:]} == {"Bearer s3cret-token"}
    assert {t for t in threading.enumerate() if t.name.startswith("a2a-")} <= loops  # its loop
    with pytest.raises(AgentUnavailableError):
        agent.run("hello")


def test_the_callers_deadline_bounds_the_call_and_cancels_the_task(
    reference: Reference, parent: tuple[RunContext, list[AgentEvent]]
) -> None:
    run, events = parent
    run.deadline = time.monotonic() + 0.6
    agent = A2AAgent(reference.base_url)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceededError, match="ran past its deadline"):
            agent.run("slow")
    finally:
        agent.close()
    assert time.monotonic() - started < 3
    assert reference.cancelled(task_id(events))  # before the call returned
    end = events[-1]
    assert isinstance(end, RunFinished) and end.error is not None
    assert end.error.reason == "deadline_exceeded"
    assert stream_problems(events) == []


def test_our_own_timeout_bounds_a_call(reference: Reference) -> None:
    agent = A2AAgent(reference.base_url, timeout_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceededError):
            agent.run("slow")
    finally:
        agent.close()
    assert time.monotonic() - started < 3


def test_calls_from_several_threads_at_once(reference: Reference) -> None:
    agent = A2AAgent(reference.base_url)
    answers: dict[int, Any] = {}
    try:
        threads = [threading.Thread(target=lambda n=n: answers.update({n: agent.run(f"hi {n}")}))
                   for n in range(6)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        agent.close()
    assert answers == {n: f"Echo: hi {n}" for n in range(6)}


# --------------------------------------------------------------- the relay, alone


def status(state: int, text: str | None = None, task: str = "t1") -> a2a_pb2.StreamResponse:
    message = (
        a2a_pb2.Message(message_id=f"m-{text}", parts=[a2a_pb2.Part(text=text)]) if text else None
    )
    return a2a_pb2.StreamResponse(status_update=a2a_pb2.TaskStatusUpdateEvent(
        task_id=task, status=a2a_pb2.TaskStatus(state=state, message=message)))  # fmt: skip


def test_without_artifacts_the_final_status_message_is_the_answer() -> None:
    events: list[AgentEvent] = []
    relay = TaskRelay(RunContext(agent="x", sink=events.append), "x")
    working = a2a_pb2.Task(id="t1", status=status(a2a_pb2.TASK_STATE_WORKING, "Thinking.")
                           .status_update.status)  # fmt: skip
    relay.take_task(working)
    relay.take_task(working)  # polled again: nothing new
    assert [e.text for e in events if isinstance(e, Observation)] == [
        "A2A task t1 started", "working: Thinking."]  # fmt: skip
    relay.take(status(a2a_pb2.TASK_STATE_COMPLETED, "It is 42."))
    assert relay.settled and relay.outcome() == "It is 42."
    silent = TaskRelay(RunContext(agent="x"), "x")
    silent.take(status(a2a_pb2.TASK_STATE_WORKING, "Thinking."))
    silent.take(status(a2a_pb2.TASK_STATE_COMPLETED))
    assert silent.outcome() == ""  # not the working state's message


def test_parts_become_answers() -> None:
    data = a2a_pb2.Part()
    data.data.string_value = "x"
    raw = a2a_pb2.Part(raw=b"%PDF", filename="r.pdf", media_type="application/pdf")
    assert answer_of([raw]) == {"$file": {"name": "r.pdf", "media_type": "application/pdf",
                                          "base64": "JVBERg=="}}  # fmt: skip
    assert answer_of([a2a_pb2.Part(text="a"), data, raw]) == (
        'a\n"x"\n[file r.pdf (application/pdf, 4 bytes)]'
    )


def test_a_chatty_agent_is_relayed_only_so_far() -> None:
    events: list[AgentEvent] = []
    relay = TaskRelay(RunContext(agent="x", sink=events.append), "x")
    for n in range(2 * MAX_RELAYED_EVENTS):
        relay.take(status(a2a_pb2.TASK_STATE_WORKING, f"step {n} " + "y" * 5000))
    assert len(events) == MAX_RELAYED_EVENTS
    assert all(len(e.text) <= 2000 for e in events if isinstance(e, Observation))


# --------------------------------------------------------------- cards


def test_name_and_description_come_from_the_card(reference: Reference) -> None:
    agent = A2AAgent(reference.base_url + "/")
    assert agent.name == NAME and agent.card_url.endswith("/.well-known/agent-card.json")
    assert agent.description == (
        "An A2A agent built with the SDK alone, for the tests.\n"
        "Skills: Echo: Says back what it is told.; Wait: Works slowly until cancelled."
    )
    agent.close()


def test_card_errors_are_clear_and_name_the_url(reference: Reference) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AgentUnavailableError, match=f"cannot fetch the A2A agent card at {dead}"):
        A2AAgent(dead)
    with pytest.raises(RemoteAgentError, match=r"has no interface we can call .*SMOKE-SIGNALS"):
        A2AAgent(f"{reference.base_url}/no-grpc")
    with pytest.raises(RemoteAgentError, match=r"/garbage/.* serves no valid A2A agent card"):
        A2AAgent(f"{reference.base_url}/garbage/")
    with pytest.raises(RemoteAgentError, match=r"no A2A agent card at .*/nowhere/.*: HTTP 404"):
        A2AAgent(f"{reference.base_url}/nowhere")
    with pytest.raises(ConfigError, match=r"expected http\(s\)://host"):
        A2AAgent("grpc://127.0.0.1:1")
    long_path = "x" * 5000
    with pytest.raises(MeshError) as raised:
        A2AAgent(f"{dead}/{long_path}")
    assert len(str(raised.value)) < 300  # the URL is clipped


def test_a_named_agent_fetches_its_card_on_first_use(parent: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    agent = A2AAgent(dead, "later", "Fetched when called.")  # no fetch yet: no error
    with pytest.raises(AgentUnavailableError, match="cannot fetch"):
        agent.run("hello")
    assert parent[1] == []  # no child run started: nothing to end
    agent.close()


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("127.0.0.1:50051", ("127.0.0.1:50051", False)),
        ("grpc://agent.example:7000", ("agent.example:7000", False)),
        ("grpcs://agent.example", ("agent.example:443", True)),
        ("https://agent.example/a2a/grpc", ("agent.example:443", True)),
        ("[::1]:9000", ("[::1]:9000", False)),
    ],
)
def test_grpc_interface_urls(url: str, target: tuple[str, bool]) -> None:
    assert grpc_target(url) == target


def test_an_unusable_grpc_url_is_refused() -> None:
    with pytest.raises(RemoteAgentError, match="unusable A2A gRPC interface URL"):
        grpc_target("agent.example")


# --------------------------------------------------------------- config


A2A_CONFIG = """
[agents.boss]
kind = "code"
description = "Boss."
address = "127.0.0.1:7000"
{extra}
"""


def load(tmp_path: Path, extra: str) -> Any:
    path = tmp_path / "mesh.toml"
    path.write_text(A2A_CONFIG.format(extra=extra))
    return load_mesh_config(path)


def test_a2a_config_good(tmp_path: Path) -> None:
    boss = load(tmp_path, """
[[agents.boss.a2a_agents]]
card_url = "https://agents.example/weather"
name = "weather"
description = "Forecasts."
timeout_s = 20
token_env = "WEATHER_TOKEN"
[[agents.boss.a2a_agents]]
card_url = "http://127.0.0.1:9999/.well-known/agent-card.json"
[agents.boss.a2a]
http_address = "0.0.0.0:0"
public_url = "https://boss.example"
""").agent("boss")  # fmt: skip
    first, second = boss.a2a_agents
    assert (first.card_url, first.name, first.description, first.timeout_s, first.token_env) == (
        "https://agents.example/weather", "weather", "Forecasts.", 20.0, "WEATHER_TOKEN")  # fmt: skip
    assert (second.name, second.timeout_s, second.token_env) == ("", None, "")
    assert (boss.a2a.http_address, boss.a2a.public_url) == ("0.0.0.0:0", "https://boss.example")
    plain = load(tmp_path, "[agents.boss.a2a]").agent("boss")
    assert (plain.a2a.http_address, plain.a2a.public_url, plain.a2a_agents) == (
        "127.0.0.1:0", "", ())  # fmt: skip
    assert load(tmp_path, "").agent("boss").a2a is None


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("a2a_agents = 3", "agents.boss.a2a_agents: expected an array of tables"),
        ("[[agents.boss.a2a_agents]]\nname = 'x'", "agents.boss.a2a_agents[0].card_url: required"),
        ("[[agents.boss.a2a_agents]]\ncard_url = 'ftp://x'", "a2a_agents[0].card_url: expected an http(s):// URL"),
        ("[[agents.boss.a2a_agents]]\ncard_url = 'http://x'\nname = 'no way'", "a2a_agents[0].name: must be a Python identifier"),
        ("[[agents.boss.a2a_agents]]\ncard_url = 'http://x'\ntimeout_s = 0", "a2a_agents[0].timeout_s: must be positive"),
        ("[[agents.boss.a2a_agents]]\ncard_url = 'http://x'\ntimeout_s = 'soon'", "a2a_agents[0].timeout_s: expected int or float"),
        ("[[agents.boss.a2a_agents]]\ncard_url = 'http://x'\ntoken_env = 'A-B'", "a2a_agents[0].token_env: 'A-B' is no variable name"),
        ("[[agents.boss.a2a_agents]]\ncard_url = 'http://x'\ncolour = 'red'", "a2a_agents[0].colour: unknown field"),
        ("[[agents.boss.a2a_agents]]\ncard_url = 'http://x'\nname = 'w'\n[[agents.boss.a2a_agents]]\ncard_url = 'http://y'\nname = 'w'", "a2a_agents[1].name: 'w' is taken"),
        ("a2a = 'yes'", "agents.boss.a2a: expected a table"),
        ("[agents.boss.a2a]\nhttp_address = 'nowhere'", "agents.boss.a2a.http_address: 'nowhere' is not host:port"),
        ("[agents.boss.a2a]\nhttp_address = 8080", "agents.boss.a2a.http_address: expected str"),
        ("[agents.boss.a2a]\npublic_url = 'boss.example'", "agents.boss.a2a.public_url: expected host:port or a grpc(s):// or http(s):// URL"),
        ("[agents.boss.a2a]\nport = 1", "agents.boss.a2a.port: unknown field"),
    ],
)  # fmt: skip
def test_a2a_config_bad(tmp_path: Path, extra: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        load(tmp_path, extra)


def test_building_needs_the_card_unless_named(tmp_path: Path, monkeypatch: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = load(tmp_path, f"[[agents.boss.a2a_agents]]\ncard_url = '{dead}'")
    with pytest.raises(ConfigError, match=r"agents.boss.a2a_agents\[0\]: cannot fetch"):
        build_agent(config, "boss")
    named = load(tmp_path, f"[[agents.boss.a2a_agents]]\ncard_url = '{dead}'\nname = 'w'\n"
                           "description = 'Weather.'\ntoken_env = 'W_TOKEN'")  # fmt: skip
    with pytest.raises(ConfigError, match=r"a2a_agents\[0\].token_env: \$W_TOKEN is not set"):
        build_agent(named, "boss")
    monkeypatch.setenv("W_TOKEN", "t")
    agent = build_agent(named, "boss")
    assert json.dumps(agent.managed_agents["w"].description) == '"Weather."'
