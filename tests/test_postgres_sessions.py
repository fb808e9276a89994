"""Conversations in PostgreSQL (``PostgresSessionStore``): what only a shared database does.

Each store stands for a replica (a process, maybe on another machine) with a
pool of its own. What both backends do alike is tested on both in
``test_sessions.py``; here: replicas sharing turns and claims, a claim whose
process was SIGKILLed, the database killed and back, and the exact count of
bytes behind the budget.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import psycopg
import pytest

from mesh.agents import Turn
from mesh.errors import NotFoundError, SessionBusyError, StateUnavailableError
from mesh.host.postgres_sessions import TURN_ROW_BYTES, PostgresSessionStore, claim_key
from mesh.state.database import Database
from tests.installed import ROOT, subprocess_env
from tests.postgres_server import PostgresServer
from tests.support import wait_until


@pytest.fixture
def replicas(state_dsn: str) -> Iterator[Callable[..., PostgresSessionStore]]:
    """``replica(agent="agent", **kwargs)``: a store of its own pool on the test's database."""
    opened: list[tuple[Database, PostgresSessionStore]] = []

    def replica(agent: str = "agent", **kwargs: Any) -> PostgresSessionStore:
        database = Database(state_dsn).open()
        opened.append((database, PostgresSessionStore(database, agent, **kwargs)))
        return opened[-1][1]

    yield replica
    for database, store in opened:
        store.close()
        database.close()


def turn(task: str, answer: str = "ok") -> Turn:
    return Turn(task=task, answer=answer)


def sql(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as db:
        cursor = db.execute(query.encode(), args)
        return cursor.fetchall() if cursor.description else []


def claimed(store: PostgresSessionStore, session_id: str, run_id: str) -> bool:
    """Whether ``store`` could claim the session (then let it go at once)."""
    try:
        with store.claim(session_id, run_id=run_id):
            return True
    except SessionBusyError:
        return False


# ------------------------------------------------------------------ replicas


def test_replicas_share_turns_and_take_turns_on_a_session(
    replicas: Callable[..., PostgresSessionStore],
) -> None:
    one, two, other_agent = replicas(), replicas(), replicas(agent="other")
    one.append("s", "run-1", turn("first"))
    with two.claim("s", run_id="run-2"):
        assert [t.task for t in two.load("s")] == ["first"]  # one's turn, read by two
        busy = r"session 's' has a run going \(run 'run-2'\)"
        with pytest.raises(SessionBusyError, match=busy), one.claim("s", run_id="run-3"):
            pass
        with pytest.raises(SessionBusyError, match=busy):
            one.delete("s")
        with other_agent.claim("s", run_id="elsewhere"):  # another agent's session "s"
            assert other_agent.load("s") == []
        two.append("s", "run-2", turn("second"))
    assert claimed(one, "s", "run-3")  # its turn now
    info, turns = one.get("s")
    assert [(t.run_id, t.task) for t in turns] == [("run-1", "first"), ("run-2", "second")]
    assert (info.turn_count, [s.session_id for s in two.list()[0]]) == (2, ["s"])
    assert other_agent.list() == ([], "")
    with pytest.raises(NotFoundError):
        other_agent.get("s")


def test_a_claim_held_by_a_killed_process_is_taken_over(
    state_dsn: str, replicas: Callable[..., PostgresSessionStore]
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, state_dsn], cwd=ROOT, env=subprocess_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "claimed\n"
            store = replicas()
            with pytest.raises(SessionBusyError, match="doomed-run"), store.claim("s"):
                pass
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
            wait_until(lambda: claimed(store, "s", "run-after"))
            assert [t.task for t in store.load("s")] == ["acknowledged"]  # its turn outlived it
            with store.claim("s", run_id="run-after"):  # the name is the new holder's
                with pytest.raises(SessionBusyError, match="run-after"), replicas().claim("s"):
                    pass
                names = sql(state_dsn, "SELECT run_id FROM mesh_session_claims")
                assert names == [("run-after",)]
        finally:
            holder.kill()


HOLDER = """
import sys
from mesh.agents import Turn
from mesh.host.postgres_sessions import PostgresSessionStore
from mesh.state.database import Database

store = PostgresSessionStore(Database(sys.argv[1]).open(), "agent")
store.append("s", "doomed-run", Turn(task="acknowledged", answer="ok"))
with store.claim("s", run_id="doomed-run"):
    print("claimed", flush=True)
    sys.stdin.read()  # until killed
"""


def test_claims_left_by_dead_processes_are_forgotten_at_start(
    state_dsn: str, replicas: Callable[..., PostgresSessionStore]
) -> None:
    """A held claim's name stays, whatever the sign of its key (pg_locks splits it in two)."""
    ids = (f"s{n}" for n in itertools.count())
    negative = next(s for s in ids if claim_key("agent", s) < 0)
    positive = next(s for s in ids if claim_key("agent", s) > 0)
    holder = replicas()
    sql(state_dsn, "INSERT INTO mesh_session_claims VALUES ('agent', 'dead', 'lost', %s, 't', 0)",
        claim_key("agent", "dead"))  # fmt: skip
    with holder.claim(negative, run_id="run-neg"), holder.claim(positive, run_id="run-pos"):
        replicas()  # starts: forgets what no live process holds
        names = sql(state_dsn, "SELECT session_id, run_id FROM mesh_session_claims")
        assert sorted(names) == sorted([(negative, "run-neg"), (positive, "run-pos")])
    assert sql(state_dsn, "SELECT * FROM mesh_session_claims") == []  # let go: names go too


# ------------------------------------------------------------ the database


def test_a_killed_database_fails_calls_then_they_work_again_by_themselves() -> None:
    server = PostgresServer()
    server.start()
    closing: list[Database | PostgresSessionStore] = []
    try:
        dsn = server.create_database("sessions")
        database = Database(dsn).open()
        store = PostgresSessionStore(database, "agent")
        quiet = PostgresSessionStore(database, "agent")  # asks nothing while it is away
        closing += [store, quiet, database]
        kept = [f"turn {n}" for n in range(5)]
        for n, task in enumerate(kept):
            store.append("s", f"run-{n}", turn(task))
        assert claimed(quiet, "q", "run-q")  # its claims connection made, then broken unseen
        with store.claim("held", run_id="run-held"):  # a claim across the crash
            server.kill()
            unreachable = "the state database .* cannot be reached"
            with pytest.raises(StateUnavailableError, match=unreachable):
                store.load("s")
            with pytest.raises(StateUnavailableError, match=unreachable):
                store.append("s", "run-lost", turn("never acknowledged"))
            with pytest.raises(StateUnavailableError, match=unreachable), store.claim("t"):
                pass
            server.start()
            wait_until(lambda: answers(lambda: store.load("s")), timeout_s=30)
            assert [t.task for t in store.load("s")] == kept  # every acknowledged turn
            assert claimed(quiet, "q", "run-q2")  # the first claim after is served...
            assert claimed(store, "t", "run-after")
            replica = PostgresSessionStore(Database(dsn).open(), "agent")
            closing += [replica, replica.database]
            with pytest.raises(SessionBusyError, match="run-held"), replica.claim("held"):
                pass  # ...and the one held across the crash was taken again
        assert store.append("s", "run-5", turn("after")).turn_count == 6
    finally:
        for each in closing:
            each.close()
        server.close()


def answers(call: Callable[[], object]) -> bool:
    try:
        call()
    except StateUnavailableError:
        return False
    return True


# --------------------------------------------------------------------- bytes


def test_the_counted_bytes_are_those_of_the_turns_kept(
    state_dsn: str, replicas: Callable[..., PostgresSessionStore]
) -> None:
    """Appends, dropped turns, forgotten sessions, deletes and retention all keep the count
    exact, with two replicas writing at once (and never deadlocking on each other)."""
    max_bytes = 256 * 1024
    stores = [replicas(max_bytes=max_bytes, max_turns=3), replicas(max_bytes=max_bytes)]
    replicas(agent="other").append("s0", "r", turn("another agent's"))
    failures: list[BaseException] = []

    def write(store: PostgresSessionStore, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for n in range(60):
                session = f"s{rng.randrange(30)}"
                if rng.random() < 0.1:
                    with suppress(NotFoundError):
                        store.delete(session)
                else:
                    store.append(session, f"r{seed}-{n}", turn(f"{n} " + "x" * rng.randrange(3000)))
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert counted(state_dsn) == actual(state_dsn) <= max_bytes * 3 // 8
    assert counted(state_dsn) > max_bytes // 8  # it was not forgetting everything
    replicas(retention_s=0)
    assert counted(state_dsn) == actual(state_dsn) == 0
    assert counted(state_dsn, "other") == actual(state_dsn, "other") > 0


def counted(dsn: str, agent: str = "agent") -> int:
    return int(sql(dsn, "SELECT bytes FROM mesh_session_usage WHERE agent = %s", agent)[0][0])


def actual(dsn: str, agent: str = "agent") -> int:
    query = "SELECT coalesce(sum(length(body)) + count(*) * %s, 0) FROM mesh_session_turns"
    ((size,),) = sql(dsn, query + " WHERE agent = %s", TURN_ROW_BYTES, agent)
    return int(size)
