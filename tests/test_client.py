"""``AgentClient`` against real services in their own processes: domain types in and out,
the server's errors rebuilt as the same class (reason, retryable), deadlines, credentials
over mutual TLS, cancelling a stream, runs as resources and sessions."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mesh.agents.context import RunContext
from mesh.agents.events import AgentEvent, CodeAction, FinalAnswer, RunFinished, RunStarted
from mesh.errors import (
    AgentUnavailableError,
    AlreadyExistsError,
    BudgetExceededError,
    BusyError,
    DeadlineExceededError,
    ErrorInfo,
    InvalidRequestError,
    MeshError,
    NotFoundError,
    PermissionDeniedError,
    RunCancelledError,
    ToolArgumentError,
    UnauthenticatedError,
)
from mesh.host.run_record import RunFilter, RunStatus
from mesh.launcher import MeshProcesses
from mesh.models.base import TokenUsage
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentCard, AgentClient, Capabilities, EventStream
from mesh.rpc.dev_credentials import new_token, write_dev_credentials
from mesh.rpc.remote import RemoteAgent
from mesh.rpc.security import MeshSecurity
from mesh.run_scope import current_scope
from tests.invariants import stream_problems
from tests.mesh_setup import SEED_SERVICES, SPIN_TASK
from tests.support import wait_until

T = TypeVar("T")
MATH_TASK = "What is the smallest prime factor of 2015? Answer with the number only."


@pytest.fixture(scope="module")
def services(mesh_dir: Path) -> Iterator[dict[str, str]]:
    config = load_mesh_config(mesh_dir / "mesh.toml")  # free ports
    with MeshProcesses(config, only=("math_specialist", "slow_specialist")) as mesh:
        yield {name: addresses[0] for name, addresses in mesh.addresses.items()}


@pytest.fixture
def math(services: dict[str, str]) -> Iterator[AgentClient]:
    with AgentClient(services["math_specialist"], agent="math_specialist") as client:
        yield client


@pytest.fixture
def slow(services: dict[str, str]) -> Iterator[AgentClient]:
    with AgentClient(services["slow_specialist"], agent="slow_specialist") as client:
        yield client


def test_describe_and_tools_are_domain_values(math: AgentClient) -> None:
    card = math.describe()
    assert (card.name, card.kind) == ("math_specialist", "code")
    assert card.capabilities.streaming and card.capabilities.cancellation
    factorial = next(t for t in card.tools if t["name"] == "factorial")
    assert factorial["inputs"]["n"]["type"] == "integer" and factorial["output_type"] == "integer"
    listed = {t["name"] for t in math.list_tools()}
    assert listed == {t["name"] for t in card.tools} - {"final_answer"}
    assert math.call_tool("factorial", {"n": 5}) == 120
    assert math.health()


def test_run_and_run_stream_return_domain_values(math: AgentClient) -> None:
    outcome = math.run(MATH_TASK, timeout_s=60)
    assert outcome.answer == 5 and outcome.status is RunStatus.SUCCEEDED and outcome.steps == 2
    assert outcome.usage.input_tokens == 1210 + 1290 and "math_specialist" in outcome.usage_by_agent
    with math.run_stream(MATH_TASK, timeout_s=60, depth_offset=2) as stream:
        events = list(stream)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert {e.depth for e in events} == {2}  # the offset a relay asks for
    assert [e.answer for e in events if isinstance(e, FinalAnswer)] == [5]


@pytest.mark.parametrize(
    ("call", "kind", "reason"),
    [
        (lambda c: c.call_tool("nope", {}), NotFoundError, "not_found"),
        (lambda c: c.call_tool("factorial", {"n": "x"}), ToolArgumentError,
         "tool_invalid_arguments"),
        (lambda c: c.run("   "), InvalidRequestError, "invalid_request"),
        (lambda c: c.get_run("no-such-run"), NotFoundError, "not_found"),
    ],
)  # fmt: skip
def test_errors_come_back_as_the_class_the_server_raised(
    math: AgentClient, call: Callable[[AgentClient], Any], kind: type[MeshError], reason: str
) -> None:
    with pytest.raises(MeshError) as err:
        call(math)
    assert type(err.value) is kind
    assert (err.value.code, err.value.retryable) == (reason, False)
    assert err.value.message.startswith(f"math_specialist at {math.target}: ")


def test_a_misrouted_address_is_not_found(services: dict[str, str]) -> None:
    misrouted = AgentClient(services["math_specialist"], agent="manager")
    with misrouted, pytest.raises(NotFoundError, match="hosts 'math_specialist', not 'manager'"):
        misrouted.run(MATH_TASK, timeout_s=10)


def test_an_unreachable_service_is_unavailable_and_retryable() -> None:
    with AgentClient("127.0.0.1:1", agent="nobody") as client, pytest.raises(MeshError) as err:
        client.describe(timeout_s=5)
    assert err.value.code == "agent_unavailable" and err.value.retryable


def test_a_cancelled_stream_ends_its_run_and_a_full_agent_is_busy(slow: AgentClient) -> None:
    stream = slow.run_stream(SPIN_TASK, run_id="client-spin-1", timeout_s=60)
    next(e for e in stream if isinstance(e, CodeAction))  # spinning in its jail now
    with pytest.raises(BusyError) as busy:  # one run at a time
        slow.run(SPIN_TASK, timeout_s=10)
    assert busy.value.retryable and busy.value.code == "busy"
    stream.cancel()
    with pytest.raises(RunCancelledError):
        list(stream)
    assert stream.cancelled
    wait_until(lambda: slow.get_run("client-spin-1").status.is_over)
    assert slow.get_run("client-spin-1").status is RunStatus.CANCELLED


def test_cancelling_the_callers_run_cancels_the_stream(slow: AgentClient) -> None:
    caller = RunContext(agent="caller")

    def spinning() -> EventStream:
        stream = slow.run_stream(SPIN_TASK, timeout_s=60, scope=caller)
        next(e for e in stream if isinstance(e, CodeAction))
        return stream

    with _unless_busy(spinning) as stream:
        caller.cancel()
        with pytest.raises(RunCancelledError):
            list(stream)


def test_the_deadline_is_honoured(slow: AgentClient) -> None:
    for call in (lambda: slow.run(SPIN_TASK, timeout_s=1.5),
                 lambda: list(slow.run_stream(SPIN_TASK, timeout_s=1.5))):  # fmt: skip
        took: list[float] = []

        def timed(call: Callable[[], object] = call, took: list[float] = took) -> None:
            started = time.monotonic()
            try:
                call()
            finally:
                took.append(time.monotonic() - started)

        with pytest.raises(DeadlineExceededError):
            _unless_busy(timed)
        assert 1.5 <= took[-1] < 5


def _unless_busy(call: Callable[[], T]) -> T:
    """``call()``, again while the slow specialist (one run at a time) still ends the last."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return call()
        except BusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_runs_are_resources_started_watched_and_found(math: AgentClient) -> None:
    record, again = math.start_run(MATH_TASK, run_id="client-started-1")
    assert (record.run_id, record.agent, record.task, again) == (
        "client-started-1", "math_specialist", MATH_TASK, False)  # fmt: skip
    with math.watch_run("client-started-1") as watch:
        indexed = list(watch.indexed())
    assert [i for i, _ in indexed] == list(range(len(indexed)))
    assert isinstance(indexed[0][1], RunStarted) and isinstance(indexed[-1][1], RunFinished)
    with math.watch_run("client-started-1", 3) as tail:  # a rejoin from where it was
        assert [e for e in tail] == [e for _, e in indexed[3:]]
    done = math.get_run("client-started-1")
    assert done.status is RunStatus.SUCCEEDED and done.answer == 5
    assert done.event_count == len(indexed)
    assert math.start_run(MATH_TASK, run_id="client-started-1")[1]  # already started: that run
    assert math.cancel("client-started-1") == (False, RunStatus.SUCCEEDED)
    runs, _ = math.list_runs(RunFilter(statuses=frozenset({RunStatus.SUCCEEDED})), page_size=100)
    assert "client-started-1" in {r.run_id for r in runs}
    first, token = math.list_runs(page_size=1)
    assert len(first) == 1 and token


def test_sessions_are_listed_read_and_deleted(math: AgentClient) -> None:
    outcome = math.run(MATH_TASK, session_id="client-session-1", timeout_s=60)
    sessions, _ = math.list_sessions(page_size=100)
    info = next(s for s in sessions if s.session_id == "client-session-1")
    assert info.turn_count == 1
    info, turns = math.get_session("client-session-1")
    assert [(t.run_id, t.task, t.steps) for t in turns] == [(outcome.run_id, MATH_TASK, 2)]
    math.delete_session("client-session-1")
    with pytest.raises(NotFoundError):
        math.get_session("client-session-1")


TOKENS = {"mesh": new_token(), "admin": new_token(), "ops": new_token()}
SECURE_CONFIG = """
[mesh]
replay = "always"
entry = "math_specialist"

[agents.math_specialist]
kind = "code"
description = "Arithmetic."
address = "127.0.0.1:0"
tools = ["smallest_prime_factor", "factorial"]
cassette = "SEED/math_specialist/cassette.jsonl"

[auth]
require_client_cert = true
tls_cert = "mesh.pem"
tls_key = "mesh.key"
tls_ca = "ca.pem"
tokens_file = "tokens"
token_file = "mesh.token"
[auth.permissions]
mesh = ["*"]
admin = ["*", "admin"]
ops = ["Describe"]
""".replace("SEED", str(SEED_SERVICES))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, MeshSecurity]]:
    directory = tmp_path_factory.mktemp("secure-client")
    write_dev_credentials(directory, tokens=TOKENS)
    (directory / "mesh.toml").write_text(SECURE_CONFIG)
    config = load_mesh_config(directory / "mesh.toml")
    assert config.security is not None
    with MeshProcesses(config, log_dir=directory / "logs") as mesh:
        yield mesh.addresses["math_specialist"][0], config.security


def as_caller(secure: tuple[str, MeshSecurity], caller: str | None) -> AgentClient:
    address, security = secure
    token = TOKENS[caller] if caller else None
    return AgentClient(address, security=dataclasses.replace(security, client_token=token))


def test_credentials_are_sent_and_refusals_are_typed(secure: tuple[str, MeshSecurity]) -> None:
    with as_caller(secure, "mesh") as client:
        assert client.describe().capabilities.tokens_required
        assert client.call_tool("factorial", {"n": 4}) == 24
    with as_caller(secure, "ops") as client:
        assert client.describe().name == "math_specialist"
        with pytest.raises(PermissionDeniedError) as denied:
            client.call_tool("factorial", {"n": 4})
        assert type(denied.value) is PermissionDeniedError
    with as_caller(secure, None) as client, pytest.raises(UnauthenticatedError) as err:
        client.describe()
    assert err.value.code == "unauthenticated" and not err.value.retryable


def test_an_admin_changes_tools_through_the_client(secure: tuple[str, MeshSecurity]) -> None:
    address, _ = secure
    with as_caller(secure, "admin") as admin:
        factorial = next(t for t in admin.list_tools() if t["name"] == "factorial")
        added = admin.add_tool({**factorial, "name": "factorial_again"}, address,
                               remote_name="factorial")  # fmt: skip
        assert (added.action, added.tool, added.caller, added.address) == (
            "added", "factorial_again", "admin", address)  # fmt: skip
        # The service calls itself over mutual TLS with its own token (RemoteTool's client).
        assert admin.call_tool("factorial_again", {"n": 5}) == 120
        removed = admin.remove_tool("factorial_again")
        assert (removed.action, removed.tool) == ("removed", "factorial_again")
        actions = [(c.action, c.tool) for c in admin.tool_history()]
        assert actions[-2:] == [("added", "factorial_again"), ("removed", "factorial_again")]
    with as_caller(secure, "mesh") as client, pytest.raises(PermissionDeniedError):
        client.remove_tool("factorial")


# RemoteAgent on the client: every attempt sends one run id; a retry that finds its run
# already started follows it (WatchRun) instead of failing, or runs again under a new id.


class Scripted:
    """A stand-in for an ``EventStream``: (index, event) pairs, then maybe an error."""

    def __init__(self, events: list[tuple[int, AgentEvent]], error: MeshError | None = None):
        self.events, self.error, self.started = events, error, False

    def indexed(self) -> Iterator[tuple[int, AgentEvent]]:
        for item in self.events:
            self.started = True
            yield item
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class ScriptedService:
    """What RemoteAgent asks of its client: each attempt's stream in turn, and a watch."""

    def __init__(
        self, attempts: list[Callable[[str], Scripted]], watch: Callable[[str], Scripted]
    ) -> None:
        self.attempts, self.watch = iter(attempts), watch
        self.sent: list[str] = []
        self.watched: list[tuple[str, int]] = []

    def run_stream(self, task: str, *, run_id: str, **options: Any) -> Scripted:
        self.sent.append(run_id)
        return next(self.attempts)(run_id)

    def watch_run(self, run_id: str, start_index: int = 0, **options: Any) -> Scripted:
        self.watched.append((run_id, start_index))
        return self.watch(run_id)

    def describe(self, **options: Any) -> AgentCard:
        return AgentCard("math_specialist", "", "code", "", capabilities=Capabilities(
            run_records=True))  # fmt: skip

    def close(self) -> None:
        pass


def child_run(run_id: str) -> list[tuple[int, AgentEvent]]:
    common: dict[str, Any] = {"agent": "math_specialist", "run_id": run_id,
                              "parent_run_id": "boss", "depth": 1}  # fmt: skip
    events: list[AgentEvent] = [
        RunStarted(task=MATH_TASK, **common),
        CodeAction(code="final_answer(5)", **common),
        FinalAnswer(answer=5, **common),
        RunFinished(usage=TokenUsage(1, 1), duration_s=0.1, steps=1, **common),
    ]
    return list(enumerate(events))


def broken(run_id: str) -> Scripted:
    """An attempt whose service went away after two events."""
    return Scripted(child_run(run_id)[:2], AgentUnavailableError("gone"))


def claimed(run_id: str) -> Scripted:
    return Scripted([], AlreadyExistsError(f"run {run_id} has not finished"))


def delegate(service: ScriptedService) -> tuple[Any, RemoteAgent, list[AgentEvent]]:
    """Call a RemoteAgent on ``service`` from a run: the answer, and what the run received."""
    remote = RemoteAgent("math_specialist", "127.0.0.1:1", idempotent=True, retry_delay_s=0)
    remote.close()
    remote.client = service  # type: ignore[assignment]
    received: list[AgentEvent] = []
    token = current_scope.set(RunContext(agent="boss", run_id="boss", sink=received.append))
    try:
        return remote.run(MATH_TASK), remote, received
    finally:
        current_scope.reset(token)


def test_a_retry_rejoins_the_run_its_first_attempt_started() -> None:
    service = ScriptedService([broken, claimed], watch=lambda run_id: Scripted(child_run(run_id)))
    answer, remote, received = delegate(service)
    assert answer == 5 and remote.retried_started == 1
    assert len(service.sent) == 2 and service.sent[0] == service.sent[1]  # one run id
    assert service.watched == [(service.sent[0], 0)]
    # Each event once: the two relayed before the break are not relayed again.
    assert [type(e).__name__ for e in received] == [
        "RunStarted", "CodeAction", "FinalAnswer", "RunFinished"]  # fmt: skip
    assert stream_problems(received) == []


def test_a_run_that_cannot_be_rejoined_runs_again_under_a_new_id() -> None:
    gone = Scripted([], NotFoundError("no run is kept here"))  # its service died, and the run
    service = ScriptedService([broken, claimed, lambda run_id: Scripted(child_run(run_id))],
                              watch=lambda run_id: gone)  # fmt: skip
    answer, _, received = delegate(service)
    assert answer == 5
    first, retried, again = service.sent
    assert first == retried != again
    # The broken run is closed, failed, before the new one starts.
    lost = next(e for e in received if isinstance(e, RunFinished))
    assert lost.run_id == first and lost.error is not None
    assert lost.error.reason == "agent_unavailable"
    assert stream_problems(received) == []


def test_a_rejoined_run_that_failed_raises_its_error_not_a_missing_answer() -> None:
    def cancelled_run(run_id: str) -> Scripted:
        events = child_run(run_id)
        *start, (index, end) = [e for e in events if not isinstance(e[1], FinalAnswer)]
        failed = dataclasses.replace(end, error=ErrorInfo("budget_exceeded", "out of tokens"))
        return Scripted([*start, (index, failed)])  # a watch ends normally, however it ended

    service = ScriptedService([broken, claimed], watch=cancelled_run)
    with pytest.raises(BudgetExceededError, match="out of tokens"):
        delegate(service)


def test_a_rejoined_run_its_service_cancelled_when_the_stream_broke_runs_again() -> None:
    def cancelled_run(run_id: str) -> Scripted:
        *start, (index, end) = [e for e in child_run(run_id) if not isinstance(e[1], FinalAnswer)]
        gone = ErrorInfo("run_cancelled", "the caller went away")  # the broken stream, not us
        return Scripted([*start, (index, dataclasses.replace(end, error=gone))])

    service = ScriptedService([broken, claimed, lambda run_id: Scripted(child_run(run_id))],
                              watch=cancelled_run)  # fmt: skip
    answer, _, received = delegate(service)
    assert answer == 5 and len(set(service.sent)) == 2  # run again, under a new id
    assert stream_problems(received) == []
