"""Runs as resources, and conversations, through a real service in its own process.

A run started in the background is found again (GetRun, ListRuns), watched by
several clients at once, rejoined from where a dropped stream stopped, and
cancelled truthfully; a session continues a conversation, across a restart.
(The service and its slow model: ``runs_setup``.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from mesh.agents.events import FinalAnswer, RunFinished, RunStarted
from mesh.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, SessionBusyError
from mesh.host.run_record import RunFilter, RunStatus
from mesh.launcher import MeshProcesses
from mesh.models.replay_server import ReplayServer
from mesh.rpc.client import AgentClient
from tests.invariants import stream_problems
from tests.mesh_setup import litellm_math_service
from tests.runs_setup import (
    FIRST_TURN,
    LONG_STEPS,
    LONG_TASK,
    SECOND_TURN,
    SHORT_TASK,
    THIRD_TURN,
    data_env,
)
from tests.support import all_pages, wait_until


@pytest.fixture(params=["files", "postgres"])
def client(request: pytest.FixtureRequest) -> Iterator[AgentClient]:
    """One service keeping its state in files; or two replicas sharing theirs in PostgreSQL,
    called round robin, so that one call lands on the replica that holds the run and the
    next on the other."""
    if request.param == "files":
        service = request.getfixturevalue("runs_service")
    else:
        service = request.getfixturevalue("shared_runs_service")
    with AgentClient(service.addresses["math_specialist"], agent="math_specialist") as client:
        yield client


def test_a_started_run_is_found_rejoined_and_cancelled_truthfully(client: AgentClient) -> None:
    record, again = client.start_run(LONG_TASK, run_id="long-1")
    assert not again and record.run_id == "long-1"
    assert record.status in (RunStatus.QUEUED, RunStatus.RUNNING)

    seen: list[tuple[int, object]] = []
    with client.watch_run("long-1") as first:  # read two events, then drop the stream
        seen += [first.next_indexed(), first.next_indexed()]
    assert [i for i, _ in seen] == [0, 1] and isinstance(seen[0][1], RunStarted)

    running = client.get_run("long-1")
    assert running.status is RunStatus.RUNNING and running.started is not None
    listed, _ = client.list_runs(RunFilter(statuses=frozenset({RunStatus.RUNNING})))
    assert "long-1" in [r.run_id for r in listed]

    again_record, again = client.start_run(
        LONG_TASK, run_id="long-1"
    )  # the same run, not a new one
    assert again and again_record.run_id == "long-1"
    with pytest.raises(AlreadyExistsError):
        client.start_run(SHORT_TASK, run_id="long-1")

    rejoined = client.watch_run("long-1", start_index=seen[-1][0] + 1)
    next_index, _ = rejoined.next_indexed()
    assert next_index == 2  # exactly where the dropped stream stopped
    assert client.cancel("long-1") == (True, RunStatus.RUNNING)
    rest = list(rejoined.indexed())
    finished = [e for _, e in rest if isinstance(e, RunFinished) and e.depth == 0]
    assert finished[0].error is not None and finished[0].error.reason == "run_cancelled"

    ended = client.get_run("long-1")
    assert ended.status is RunStatus.CANCELLED and ended.error is not None
    assert (ended.error.reason, ended.error.retryable) == ("run_cancelled", False)
    assert client.cancel("long-1") == (False, RunStatus.CANCELLED)  # nothing left to cancel

    replay = [e for _, e in client.watch_run("long-1").indexed()]
    assert len(replay) == ended.event_count and stream_problems(replay) == []


def test_several_watchers_see_the_same_run_and_a_finished_one_keeps_its_answer(
    client: AgentClient,
) -> None:
    record, _ = client.start_run(LONG_TASK)  # the service makes up the id
    watched: list[list[int]] = [[], [], []]

    def watch(into: list[int]) -> None:
        into += [i for i, _ in client.watch_run(record.run_id).indexed()]

    threads = [threading.Thread(target=watch, args=(w,)) for w in watched]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done = client.get_run(record.run_id)
    assert done.status is RunStatus.SUCCEEDED and done.answer == 8 and done.steps == LONG_STEPS
    assert done.usage.input_tokens == LONG_STEPS * 20 and done.ended is not None
    assert watched == [list(range(done.event_count))] * 3
    answers = [e for e in client.watch_run(record.run_id) if isinstance(e, FinalAnswer)]
    assert [a.answer for a in answers] == [8]


def test_every_kind_of_run_is_recorded_and_listed_newest_first_in_pages(
    client: AgentClient,
) -> None:
    unary = client.run(SHORT_TASK, run_id="short-unary")
    streamed = list(client.run_stream(SHORT_TASK, run_id="short-streamed"))
    assert unary.answer == 6 and isinstance(streamed[-1], RunFinished)
    for run_id in ("short-unary", "short-streamed"):
        assert client.get_run(run_id).status is RunStatus.SUCCEEDED

    ids = [r.run_id for r in all_pages(lambda t: client.list_runs(page_size=2, page_token=t), 2)]
    assert ids.index("short-streamed") < ids.index("short-unary")
    created = [client.get_run(i).created for i in ids]
    assert created == sorted(created, reverse=True)


def test_bad_run_ids_and_tokens_are_refused_without_echoing_them(client: AgentClient) -> None:
    with pytest.raises(NotFoundError):
        client.get_run("never-was")
    for bad in ("x" * 100_000, "no spaces"):
        with pytest.raises(InvalidRequestError) as refused:
            client.get_run(bad)
        assert len(str(refused.value)) < 400
    with pytest.raises(InvalidRequestError) as refused:
        client.list_runs(page_token="y" * 100_000)
    assert len(str(refused.value)) < 400


def test_a_session_continues_the_conversation_even_after_a_restart(
    runs_model: ReplayServer, tmp_path: Path
) -> None:
    # A service of its own: it is restarted midway.
    with _session_service(runs_model, tmp_path) as mesh, _client(mesh) as client:
        one = client.run(FIRST_TURN, session_id="chat-1")
        two = client.run(SECOND_TURN, session_id="chat-1")
        assert (one.answer, two.answer) == ("noted: 7", 5040)  # the second saw the first
        other = client.run(SHORT_TASK, session_id="chat-2")  # another conversation
        assert other.answer == 6
    with _session_service(runs_model, tmp_path) as mesh, _client(mesh) as client:
        three = client.run(THIRD_TURN, session_id="chat-1")
        assert three.answer == 7
        session, turns = client.get_session("chat-1")
        assert session.turn_count == 3 and session.dropped_turns == 0
        assert [t.task for t in turns] == [FIRST_TURN, SECOND_TURN, THIRD_TURN]
        assert [t.answer_text for t in turns] == ["noted: 7", "5040", "7"]
        assert [r.run_id for r in client.list_runs(RunFilter(session_id="chat-1"))[0]] == [
            three.run_id]  # runs are kept in memory; the conversation on disk  # fmt: skip
        sessions, _ = client.list_sessions()
        assert [s.session_id for s in sessions] == ["chat-1", "chat-2"]
        client.delete_session("chat-2")
        assert [s.session_id for s in client.list_sessions()[0]] == ["chat-1"]
        with pytest.raises(NotFoundError):
            client.get_session("chat-2")


def test_one_session_runs_one_turn_at_a_time(client: AgentClient) -> None:
    record, _ = client.start_run(LONG_TASK, session_id="busy-chat")
    wait_until(lambda: client.get_run(record.run_id).status is RunStatus.RUNNING)
    with pytest.raises(SessionBusyError) as busy:
        client.run(SHORT_TASK, session_id="busy-chat")
    assert busy.value.code == "session_busy" and record.run_id in busy.value.message
    client.cancel(record.run_id)
    wait_until(lambda: client.get_run(record.run_id).status is RunStatus.CANCELLED)
    assert client.run(SHORT_TASK, session_id="busy-chat").answer == 6  # free again


def _session_service(model: ReplayServer, directory: Path) -> AbstractContextManager[MeshProcesses]:
    return litellm_math_service(model.api_base, directory, data_env(directory))


def _client(mesh: MeshProcesses) -> AgentClient:
    return AgentClient(mesh.addresses["math_specialist"][0], agent="math_specialist")


def test_concurrent_starts_with_one_run_id_start_one_run(client: AgentClient) -> None:
    def start(run_id: str, into: list[tuple[str, bool]]) -> None:
        record, again = client.start_run(SHORT_TASK, run_id=run_id)
        into.append((record.run_id, again))

    for trial in range(5):
        run_id, results = f"twice-{trial}", []
        threads = [threading.Thread(target=start, args=(run_id, results)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(results) == [(run_id, False), (run_id, True), (run_id, True)]
        wait_until(lambda r=run_id: client.get_run(r).status is RunStatus.SUCCEEDED)
