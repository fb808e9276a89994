"""Conversations: a run continues the turns before it (``reset=False``, ``history=``), and
a service keeps them durably and within bounds (``SessionStore``, and
``PostgresSessionStore``: each store test runs on both)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from mesh import ChatMessage, CodeAgent, ModelResponse, TokenUsage, ToolCall, ToolCallingAgent
from mesh.agents import Turn
from mesh.agents.conversation import ANSWER_PREFIX, keep_recent
from mesh.data_limit import DataLimit
from mesh.errors import (
    InvalidRequestError,
    ModelCallError,
    NotFoundError,
    SessionBusyError,
    error_class,
)
from mesh.host.postgres_sessions import PostgresSessionStore, claim_key
from mesh.host.sessions import Sessions, SessionStore, default_sessions_path
from mesh.rpc.status import status_for
from mesh.state.database import Database
from tests.support import calls, code

# ------------------------------------------------------------------ helpers


class Script:
    """A model that answers in call order and keeps every conversation it was sent."""

    model_id = "script"

    def __init__(self, *answers: ModelResponse | str | Exception) -> None:
        self.answers = list(answers)
        self.seen: list[list[ChatMessage]] = []
        self._lock = threading.Lock()

    def generate(
        self, messages: Sequence[ChatMessage], tools: Any = None, stop: Any = None
    ) -> ModelResponse:
        with self._lock:
            self.seen.append(list(messages))
            answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, str):
            return ModelResponse(ChatMessage("assistant", answer), TokenUsage(10, 1))
        return answer


def code_agent(model: Script, **kwargs: Any) -> CodeAgent:
    return CodeAgent([], model, executor="unsafe-local", **kwargs)


def said(messages: list[ChatMessage]) -> list[tuple[str, str | None]]:
    return [(m.role, m.content) for m in messages[1:]]  # the system prompt aside


def turn(task: str, answer: str = "ok", **kwargs: Any) -> Turn:
    return Turn(task=task, answer=answer, **kwargs)


# ----------------------------------------------------------- agent: history


def test_reset_false_shows_the_model_the_earlier_task_steps_and_answer() -> None:
    model = Script(code("print(6 * 7)"), code("final_answer(6 * 7)"), code("final_answer(84)"))
    agent = code_agent(model)
    assert agent.run("What is 6 times 7?") == 42
    assert agent.run("Double it.", reset=False) == 84
    assert said(model.seen[2]) == [
        ("user", "What is 6 times 7?"),
        ("assistant", code("print(6 * 7)")),
        ("user", "Observation:\nExecution logs:\n42"),
        ("assistant", code("final_answer(6 * 7)")),
        ("assistant", ANSWER_PREFIX + "42"),
        ("user", "Double it."),
    ]
    assert agent.memory is not None and [t.task for t in agent.memory.history] == [
        "What is 6 times 7?"
    ]


def test_reset_true_starts_afresh() -> None:
    model = Script(code("final_answer(42)"), code("final_answer('fresh')"))
    agent = code_agent(model)
    agent.run("What is 6 times 7?")
    assert agent.run("Double it.") == "fresh"  # reset=True is the default
    assert said(model.seen[1]) == [("user", "Double it.")]


def test_tool_calling_turns_keep_their_calls_and_results() -> None:
    model = Script(
        calls(("final_answer", {"answer": "Paris"}), content="Easy."),
        calls(("final_answer", {"answer": "Lyon"})),
    )
    agent = ToolCallingAgent([], model)
    agent.run("Capital of France?")
    agent.run("Its second city?", reset=False)
    seen = model.seen[1][1:]
    assert [m.role for m in seen] == ["user", "assistant", "tool", "assistant", "user"]
    assert seen[1].tool_calls == (ToolCall("id_0_final_answer", "final_answer",
                                           '{"answer": "Paris"}'),)  # fmt: skip
    assert seen[2].tool_call_id == "id_0_final_answer" and seen[2].content == "Paris"
    assert seen[3].content == ANSWER_PREFIX + "Paris"


def test_a_conversation_goes_on_over_several_runs() -> None:
    model = Script(*(code(f"final_answer({n})") for n in range(3)))
    agent = code_agent(model)
    agent.run("zero")
    agent.run("one", reset=False)
    agent.run("two", reset=False)
    users = [m.content for m in model.seen[2] if m.role == "user"]
    assert users == ["zero", "one", "two"]


def test_history_from_storage_reads_like_the_agents_own_memory() -> None:
    first = Script(code("final_answer('a')"), code("final_answer('b')"))
    agent = code_agent(first)
    result = agent.run("Say a.", return_full_result=True)
    assert result.turn is not None
    stored = Turn.from_json(result.turn.to_json())
    assert stored == result.turn
    agent.run("Say b.", reset=False)
    second = Script(code("final_answer('b')"))
    code_agent(second).run("Say b.", history=[stored])
    assert said(second.seen[0]) == said(first.seen[1])


def test_history_and_reset_false_together_are_refused() -> None:
    agent = code_agent(Script())
    with pytest.raises(InvalidRequestError, match="not both"):
        agent.run("task", history=[], reset=False)


def test_a_streamed_run_reads_its_history_too() -> None:
    model = Script(code("final_answer('b')"))
    events = list(code_agent(model).run("Say b.", stream=True, history=[turn("Say a.", "a")]))
    assert events
    assert said(model.seen[0]) == [("user", "Say a."), ("assistant", ANSWER_PREFIX + "a"),
                                   ("user", "Say b.")]  # fmt: skip


def test_a_failed_run_adds_no_turn() -> None:
    model = Script(
        code("final_answer('one')"),
        ModelCallError("the provider is down", retryable=False),
        code("final_answer('three')"),
    )
    agent = code_agent(model)
    agent.run("first")
    with pytest.raises(ModelCallError):
        agent.run("second", reset=False)
    agent.run("third", reset=False)
    assert [m.content for m in model.seen[2] if m.role == "user"] == ["first", "third"]


def test_a_max_steps_turn_keeps_its_answer_once() -> None:
    model = Script(code("print(1)"), "My best answer is 1.", code("final_answer(2)"))
    agent = code_agent(model, max_steps=1)
    result = agent.run("Count.", return_full_result=True)
    assert result.state == "max_steps" and result.turn is not None
    assert result.turn.steps == 2
    agent.run("Again.", reset=False)
    assert said(model.seen[2]) == [
        ("user", "Count."),
        ("assistant", code("print(1)")),
        ("user", "Observation:\nExecution logs:\n1"),
        ("assistant", ANSWER_PREFIX + "My best answer is 1."),
        ("user", "Again."),
    ]


def test_a_managed_agent_never_reads_its_callers_conversation() -> None:
    helper_model = Script(
        calls(("final_answer", {"answer": "helped once"})),
        calls(("final_answer", {"answer": "helped twice"})),
    )
    helper = ToolCallingAgent([], helper_model, name="helper", description="Helps.")
    manager_model = Script(
        calls(("helper", {"task": "Help with one."})),
        calls(("final_answer", {"answer": "one done"})),
        calls(("helper", {"task": "Help with two."})),
        calls(("final_answer", {"answer": "two done"})),
    )
    manager = ToolCallingAgent([], manager_model, managed_agents=[helper])
    manager.run("Do one.")
    assert manager.run("Do two.", reset=False) == "two done"
    assert "Do one." in [m.content for m in manager_model.seen[2]]  # the manager remembers
    assert said(helper_model.seen[1]) == [("user", "Help with two.")]  # its delegate does not


def test_the_oldest_whole_turns_are_dropped_beyond_the_bounds() -> None:
    turns = [turn(f"task {n}", "x" * 100) for n in range(5)]
    model = Script(code("final_answer(0)"), code("final_answer(0)"))
    agent = code_agent(model)
    agent.max_history_turns = 3
    agent.run("now", history=turns)
    assert [m.content for m in model.seen[0] if m.role == "user"] == [
        "task 2", "task 3", "task 4", "now"]  # fmt: skip
    agent.max_history_turns = 20
    agent.max_history_chars = 2 * turns[0].chars
    agent.run("now", history=turns)
    assert [m.content for m in model.seen[1] if m.role == "user"] == ["task 3", "task 4", "now"]
    assert keep_recent(turns, 0, 10**6) == []
    assert keep_recent(turns, 5, turns[0].chars - 1) == []  # never half a turn


def test_a_huge_turn_is_clipped_to_the_history_bound() -> None:
    model = Script(code(f"print('{'y' * 50_000}')"), code("final_answer('done')"))
    agent = code_agent(model)
    agent.max_history_chars = 20_000
    result = agent.run("x" * 100_000, return_full_result=True)
    assert result.turn is not None and result.turn.chars <= 20_000
    assert result.turn.answer == "done" and result.turn.task.startswith("xxx")


# ----------------------------------------------------------------- Turn JSON


def test_a_turn_goes_to_and_from_plain_json() -> None:
    original = Turn(
        task="Capital?",
        answer="Paris",
        steps=2,
        messages=(
            ChatMessage("assistant", None, (ToolCall("c1", "search", '{"q": "capital"}'),)),
            ChatMessage("tool", "Paris is the capital.", tool_call_id="c1"),
            ChatMessage("user", "Error:\nbad\nNow let's retry"),
        ),
    )
    data = json.loads(original.to_json())
    assert set(data) == {"task", "answer", "steps", "messages"}
    assert Turn.from_json(original.to_json()) == original


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"task": "t", "answer": "a", "steps": 1}',
        '{"task": 1, "answer": "a", "steps": 1, "messages": []}',
        '{"task": "t", "answer": "a", "steps": -1, "messages": []}',
        '{"task": "t", "answer": "a", "steps": true, "messages": []}',
        '{"task": "t", "answer": "a", "steps": 1, "messages": [{"role": "system"}]}',
        '{"task": "t", "answer": "a", "steps": 1, "messages": [{"role": "user", "content": 5}]}',
        '{"task": "t", "answer": "a", "steps": 1, "messages": [{"role": "assistant",'
        ' "tool_calls": [{"id": "c", "name": "n"}]}]}',
        '{"task": "t", "answer": "a", "steps": 1, "messages": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
)
def test_a_malformed_turn_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        Turn.from_json(text)


def test_clipping_bounds_a_turn_and_keeps_tool_arguments_json() -> None:
    big = Turn(
        task="t" * 100_000,
        answer="a" * 100_000,
        messages=(ChatMessage("assistant", "m" * 100_000,
                              (ToolCall("c" * 1000, "n", json.dumps({"x": "v" * 50_000})),)),),
    )  # fmt: skip
    clipped = big.clipped(10_000)
    assert clipped.chars <= 10_000
    assert clipped.task.startswith("ttt") and clipped.answer.startswith("aaa")
    json.loads(clipped.messages[0].tool_calls[0].arguments)  # still an object
    many = Turn("t", "a", tuple(ChatMessage("user", "x" * 100) for _ in range(5000)))
    assert many.clipped(10_000).messages == ()  # too many steps: task and answer only
    assert many.clipped(10_000).answer == "a"
    assert big.clipped(10).chars < 100  # nothing fits: the smallest turn


# ------------------------------------------------- SessionStore, PostgresSessionStore


class SqliteFile:
    """Sessions in one SQLite file (``SessionStore``): every store opened is on that file."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, **kwargs: Any) -> Any:
        return SessionStore(self.path, **kwargs)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """``query`` on the file: ``{turns}`` and ``{claims}`` name the tables, ``%s`` a value."""
        query = query.format(turns="turns", claims="claims").replace("%s", "?")
        with sqlite3.connect(self.path) as db:
            return db.execute(query, args).fetchall()

    def leave_claim_of_dead_process(self, session_id: str, run_id: str) -> None:
        gone = subprocess.Popen(["true"])  # a process id that is no more
        gone.wait()
        self.sql("INSERT INTO {claims} VALUES (%s, %s, %s, 'token', 0)", session_id, run_id,
                 gone.pid)  # fmt: skip

    def kept_bytes(self) -> int:
        """What keeping within ``max_bytes`` bounds: the files (the shared memory aside)."""
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*")
                   if not p.name.endswith("-shm"))  # fmt: skip

    def close(self) -> None:
        pass


class PostgresDatabase:
    """Sessions in one PostgreSQL database (``PostgresSessionStore``): every store opened is
    another replica of the same agent, with a pool of its own."""

    name = "postgresql"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.databases: list[Database] = []

    def open(self, **kwargs: Any) -> Any:
        self.databases.append(Database(self.dsn).open())
        return PostgresSessionStore(self.databases[-1], "agent", **kwargs)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """``query`` on the database: ``{turns}`` and ``{claims}`` name the tables."""
        query = query.format(turns="mesh_session_turns", claims="mesh_session_claims")
        with psycopg.connect(self.dsn, autocommit=True) as db:
            cursor = db.execute(query.encode(), args)
            return cursor.fetchall() if cursor.description else []

    def leave_claim_of_dead_process(self, session_id: str, run_id: str) -> None:
        """The name a dead holder leaves; its lock went with its connection."""
        self.sql("INSERT INTO {claims} VALUES ('agent', %s, %s, %s, 'token', 0)", session_id,
                 run_id, claim_key("agent", session_id))  # fmt: skip

    def kept_bytes(self) -> int:
        """What keeping within ``max_bytes`` bounds: the bytes counted for the agent."""
        return int(self.sql("SELECT bytes FROM mesh_session_usage WHERE agent = 'agent'")[0][0])

    def close(self) -> None:
        for database in self.databases:
            database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Each store test, on a SQLite file and on a PostgreSQL database."""
    if request.param == "sqlite":
        place: Any = SqliteFile(tmp_path / "agent.sqlite3")
    else:
        place = PostgresDatabase(request.getfixturevalue("state_dsn"))
    yield place
    place.close()


@pytest.fixture
def store(backend: Any) -> Any:
    store = backend.open()
    yield store
    store.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``time.time()`` in the store, one second further at each call."""
    now = [1_700_000_000.0]

    def tick() -> float:
        now[0] += 1
        return now[0]

    monkeypatch.setattr(time, "time", tick)
    return now


def test_turns_survive_a_new_store_on_the_same_file(backend: Any) -> None:
    first = backend.open()
    kept = [turn("Say a.", "a", steps=1,
                 messages=(ChatMessage("assistant", code("final_answer('a')")),)),
            turn("Say b.", "b", steps=3)]  # fmt: skip
    first.append("s1", "run-1", kept[0])
    info = first.append("s1", "run-2", kept[1])
    assert (info.session_id, info.turn_count, info.dropped_turns) == ("s1", 2, 0)
    first.close()
    again = backend.open()
    assert again.load("s1") == kept
    info, turns = again.get("s1")
    assert [(t.run_id, t.task, t.answer_text, t.steps) for t in turns] == [
        ("run-1", "Say a.", "a", 1), ("run-2", "Say b.", "b", 3)]  # fmt: skip
    assert info.created <= turns[0].time <= turns[1].time <= info.updated
    again.close()


def test_a_new_session_has_no_turns(store: Sessions) -> None:
    assert store.load("never-seen") == []
    with pytest.raises(NotFoundError, match="no session 'never-seen'"):
        store.get("never-seen")


def test_a_session_drops_its_oldest_turns_beyond_its_bounds(backend: Any) -> None:
    store = backend.open(max_turns=3)
    for n in range(5):
        info = store.append("s", f"r{n}", turn(f"task {n}"))
    assert (info.turn_count, info.dropped_turns) == (3, 2)
    assert [t.task for t in store.load("s")] == ["task 2", "task 3", "task 4"]
    # Bytes too: each turn is about a quarter of what a session keeps.
    size = store.max_turn_chars - 200
    for n in range(6):
        info = store.append("big", f"b{n}", turn(f"{n}" + "x" * size))
    assert info.turn_count <= 3 and info.dropped_turns == 6 - info.turn_count
    assert store.load("big")[-1].task.startswith("5")
    store.close()


def test_sessions_are_listed_most_recently_updated_first_in_pages(
    store: Sessions, clock: list[float]
) -> None:
    for name in ["a", "b", "c", "d", "e"]:
        store.append(name, f"run-{name}", turn("t"))
    store.append("b", "run-b2", turn("t"))  # b is now the most recent
    seen, token, pages = [], "", 0
    while True:
        page, token = store.list(page_size=2, page_token=token)
        seen += [s.session_id for s in page]
        pages += 1
        if not token:
            break
    assert seen == ["b", "e", "d", "c", "a"] and pages == 3
    assert [s.session_id for s in store.list()[0]] == seen
    assert store.list(page_size=10**9)[1] == ""


@pytest.mark.parametrize("token", ["garbage", "x" * 10_000, "W10=", "WzEsIDJd", "é"])
def test_a_page_token_the_store_did_not_give_is_refused(store: Sessions, token: str) -> None:
    with pytest.raises(InvalidRequestError, match="page_token"):
        store.list(page_token=token)


def test_delete_forgets_a_session(store: Sessions) -> None:
    store.append("s", "r", turn("t"))
    store.append("other", "r2", turn("t"))
    store.delete("s")
    assert store.load("s") == []
    with pytest.raises(NotFoundError):
        store.get("s")
    with pytest.raises(NotFoundError):
        store.delete("s")
    assert [s.session_id for s in store.list()[0]] == ["other"]


def test_a_second_run_on_a_busy_session_is_refused(backend: Any) -> None:
    store, replica = backend.open(), backend.open()  # e.g. two replicas' stores
    store.append("s", "r0", turn("t"))
    with store.claim("s", run_id="run-1"):
        busy = r"session 's' has a run going \(run 'run-1'\)"
        for other in (store, replica):
            with pytest.raises(SessionBusyError, match=busy), other.claim("s", run_id="run-2"):
                pass
        for other in (store, replica):
            with pytest.raises(SessionBusyError, match=busy):
                other.delete("s")
        with replica.claim("another", run_id="run-3"):  # other sessions are free
            pass
    with replica.claim("s", run_id="run-2"):  # its turn now, and the others' to wait
        with pytest.raises(SessionBusyError, match=r"\(run 'run-2'\)"), store.claim("s"):
            pass
        replica.append("s", "run-2", turn("t2"))
    assert [t.task for t in store.load("s")] == ["t", "t2"]
    store.close()
    replica.close()


def test_a_claim_left_by_a_dead_process_is_taken_over(backend: Any) -> None:
    store, replica = backend.open(), backend.open()
    backend.leave_claim_of_dead_process("s", "lost-run")
    with store.claim("s", run_id="run-2"):
        with pytest.raises(SessionBusyError, match="run-2"), replica.claim("s"):
            pass
        store.append("s", "run-2", turn("t"))
    with replica.claim("s", run_id="run-3"):
        pass
    store.close()
    replica.close()


def test_a_store_closed_during_a_run_lets_its_claims_go(backend: Any) -> None:
    store = backend.open()
    with store.claim("s", run_id="run-1"):
        store.close()  # e.g. the service stopping; the run ends after
    again = backend.open()
    with again.claim("s", run_id="run-2"):
        pass
    again.close()


def test_session_busy_is_failed_precondition_on_the_wire() -> None:
    code_, _, detail = status_for(SessionBusyError("busy"))
    assert code_ == grpc.StatusCode.FAILED_PRECONDITION
    assert detail.reason == "session_busy" and not detail.retryable
    assert error_class("session_busy") is SessionBusyError


def test_a_stored_turn_is_bounded_whatever_it_holds(backend: Any, store: Any) -> None:
    huge = Turn(
        task="t" * 5_000_000,
        answer="a" * 1_000_000,
        messages=tuple(ChatMessage("user", "m" * 1000) for _ in range(10_000)),
        steps=10_000,
    )
    store.append("s", "r", huge)
    (loaded,) = store.load("s")
    assert loaded.chars <= store.max_turn_chars
    assert loaded.steps == 10_000 and loaded.task.startswith("ttt")
    ((size,),) = backend.sql("SELECT max(length(body)) FROM {turns}")
    assert size <= 4 * store.max_turn_chars


def test_an_unreadable_stored_turn_is_skipped(backend: Any, store: Sessions) -> None:
    store.append("s", "r1", turn("first"))
    store.append("s", "r2", turn("second"))
    backend.sql("UPDATE {turns} SET body = %s WHERE run_id = 'r1'", b"\xff not json")
    assert [t.task for t in store.load("s")] == ["second"]
    assert [t.run_id for t in store.get("s")[1]] == ["r2"]


def test_the_store_keeps_within_its_bytes_forgetting_the_least_recently_updated(
    backend: Any,
) -> None:
    store = backend.open(max_bytes=256 * 1024)
    for n in range(400):  # about 1.6 MB of turns, each in its own session
        store.append(f"s{n}", f"r{n}", turn(f"{n} " + "x" * 4000))
        assert backend.kept_bytes() <= 256 * 1024
    assert store.load("s399")[0].task.startswith("399")
    assert store.load("s0") == []  # forgotten
    store.close()


def test_sessions_unused_past_their_retention_are_dropped_at_start(backend: Any) -> None:
    store = backend.open()
    store.append("old", "r", turn("t"))
    store.close()
    store = backend.open(retention_s=0)
    assert store.list() == ([], "")
    store.close()


def test_the_default_path_and_the_data_limit_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_SESSIONS_DIR", str(tmp_path / "sessions"))
    assert default_sessions_path("helper") == tmp_path / "sessions" / "helper.sqlite3"
    limit = DataLimit(10)
    shares = limit.audit_bytes + limit.trace_bytes + limit.ledger_bytes + limit.sessions_bytes
    assert limit.sessions_bytes > 0 and shares <= 10 * 2**20
