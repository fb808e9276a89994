"""Tool changes shared by an agent's replicas through PostgreSQL: made on one, applied on all.

Each replica here is what one process of a replicated agent holds: its own agent object,
its own pool and listener on the one database, and a ToolAdmin following the agent's log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from mesh import ToolCallingAgent, tool
from mesh.errors import StateUnavailableError
from mesh.rpc.definition_log import record_definition
from mesh.rpc.postgres_tool_changes import PostgresToolChangeLog, tool_changes_channel
from mesh.rpc.remote_tool import RemoteTool
from mesh.rpc.tool_admin import ToolAdmin
from mesh.rpc.tool_change import ToolChange
from mesh.state.database import Database
from mesh.state.notifications import Notifications
from tests.postgres_server import PostgresServer
from tests.support import scripted, wait_until

AGENT = "researcher"
ADDRESS = "127.0.0.1:1"  # never called: a RemoteTool opens no connection until its first call
CUBE = {"name": "cube", "description": "Cube of n.", "output_type": "integer",
        "inputs": {"n": {"type": "integer", "description": "The number."}}}  # fmt: skip
SQUARE = {**CUBE, "name": "square", "description": "Square of n."}
WITHIN_A_SECOND = 1.0


@tool
def shout(text: str) -> str:
    """Upper-cases text.

    Args:
        text: What to shout.
    """
    return text.upper()


@dataclass
class Replica:
    database: Database
    notifications: Notifications
    admin: ToolAdmin

    @property
    def tools(self) -> dict[str, Any]:
        return dict(self.admin.agent.tools)

    def close(self) -> None:
        self.admin.close()
        self.notifications.close()
        self.database.close()


def start_replica(dsn: str, name: str = AGENT) -> Replica:
    """One replica: the configured agent, the log's changes restored, then followed."""
    database = Database(dsn, application="replica").open()
    agent = ToolCallingAgent([shout], scripted(), name=name, description="Finds facts.")
    admin = ToolAdmin(agent, PostgresToolChangeLog(database, name))
    admin.restore()
    notifications = Notifications(database)
    admin.follow(notifications)
    replica = Replica(database, notifications, admin)
    wait_until_listening(replica, dsn)
    return replica


def wait_until_listening(replica: Replica, dsn: str) -> None:
    """Until the replica's listener has taken up the agent's channel (notifications sent
    before that are not its to see; the test's changes must not race it)."""
    heard: list[str] = []
    channel = replica.admin.log.channel
    replica.notifications.subscribe(channel, heard.append)
    probe = f"probe-{uuid.uuid4().hex}"

    def answered() -> bool:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("SELECT pg_notify(%s, %s)", (channel, probe))
        return probe in heard

    wait_until(answered, timeout_s=15)


@pytest.fixture
def replicas(state_dsn: str) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.close()


def test_a_change_on_one_replica_reaches_the_others_within_a_second(
    state_dsn: str, replicas: list[Replica]
) -> None:
    a, b = start_replica(state_dsn), start_replica(state_dsn)
    replicas += [a, b]

    added = a.admin.add(CUBE, ADDRESS, caller="admin")
    assert added.action == "added" and "cube" in a.tools
    cube = wait_until(lambda: b.tools.get("cube"), timeout_s=WITHIN_A_SECOND)
    assert isinstance(cube, RemoteTool) and cube.definition() == added.definition
    assert cube.address == ADDRESS and cube is not a.tools["cube"]

    # a's own change comes back to it too: recognised, not built or applied a second time
    mine = a.tools["cube"]
    wait_until(lambda: a.admin.position == b.admin.position > 0, timeout_s=WITHIN_A_SECOND)
    assert a.tools["cube"] is mine

    replaced = b.admin.add({**CUBE, "description": "Cube, faster."}, "127.0.0.1:2",
                           caller="admin", replace=True)  # fmt: skip
    assert replaced.action == "replaced"
    wait_until(lambda: a.tools["cube"].description == "Cube, faster.", timeout_s=WITHIN_A_SECOND)
    assert a.tools["cube"].address == "127.0.0.1:2"

    a.admin.remove("shout", caller="admin")  # a configured tool: removed everywhere too
    a.admin.remove("cube", caller="admin")
    wait_until(lambda: not {"cube", "shout"} & set(b.tools), timeout_s=WITHIN_A_SECOND)
    assert set(a.tools) == set(b.tools) == {"final_answer"}
    assert a.admin.history() == b.admin.history()
    assert [c.action for c in a.admin.history()] == ["added", "replaced", "removed", "removed"]


def test_a_replica_started_later_restores_the_same_tools(
    state_dsn: str, replicas: list[Replica]
) -> None:
    a, b = start_replica(state_dsn), start_replica(state_dsn)
    other = start_replica(state_dsn, name="writer")  # another agent: its log is its own
    replicas += [a, b, other]
    a.admin.add(CUBE, ADDRESS, caller="admin")
    b.admin.add(SQUARE, ADDRESS, caller="admin")
    b.admin.remove("shout", caller="admin")
    a.admin.add({**SQUARE, "description": "Square, again."}, ADDRESS, caller="admin",
                replace=True)  # fmt: skip
    other.admin.add(CUBE, ADDRESS, caller="admin")
    other.admin.remove("shout", caller="admin")
    wait_until(lambda: b.tools.get("square") and b.tools["square"].description == "Square, "
               "again.", timeout_s=WITHIN_A_SECOND)  # fmt: skip

    c = start_replica(state_dsn)
    replicas.append(c)
    assert set(c.tools) == set(a.tools) == set(b.tools) == {"cube", "square", "final_answer"}
    assert c.tools["square"].description == "Square, again."
    assert c.admin.position == a.admin.position == b.admin.position
    writer, untouched = start_replica(state_dsn, "writer"), start_replica(state_dsn, "untouched")
    replicas += [writer, untouched]
    assert set(writer.tools) == {"cube", "final_answer"}
    assert set(untouched.tools) == {"shout", "final_answer"}


def test_a_change_before_the_announcement_arrives_is_seen_by_the_next_change(
    state_dsn: str, replicas: list[Replica]
) -> None:
    """An admin removes on b what it just added on a: b reads the log before it changes it,
    so it does not answer "no such tool" while a's announcement is on its way."""
    a = start_replica(state_dsn)
    replicas.append(a)
    database = Database(state_dsn, application="deaf").open()
    deaf = ToolAdmin(ToolCallingAgent([shout], scripted(), name=AGENT, description="Finds."),
                     PostgresToolChangeLog(database, AGENT))  # fmt: skip
    deaf.restore()
    deaf.follow(Unheard())  # follows, but hears no announcement
    try:
        a.admin.add(CUBE, ADDRESS, caller="admin")
        removed = deaf.remove("cube", caller="admin")
        assert removed.action == "removed" and "cube" not in deaf.agent.tools
        wait_until(lambda: "cube" not in a.tools, timeout_s=WITHIN_A_SECOND)
    finally:
        deaf.close()
        database.close()


class Unheard:
    def subscribe(self, channel: str, on_message: Any, resumed: Any = None) -> None:
        pass


def test_a_change_that_cannot_be_applied_is_logged_once_and_following_goes_on(
    state_dsn: str, replicas: list[Replica], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = start_replica(state_dsn), start_replica(state_dsn)
    replicas += [a, b]
    log = PostgresToolChangeLog(a.database, AGENT)
    a.admin.add(CUBE, ADDRESS, caller="admin")
    wait_until(lambda: "cube" in b.tools, timeout_s=WITHIN_A_SECOND)  # while it was valid
    with a.database.transaction() as db:  # a record this smolmesh cannot build a tool from
        db.execute("UPDATE mesh_tool_changes SET record = replace(record, '\"integer\"', "
                   "'\"complex\"')")  # fmt: skip
    assert log.read()[0].definition["output_type"] == "complex"
    caplog.set_level(logging.WARNING, logger="mesh.rpc.tool_admin")
    fresh = start_replica(state_dsn)  # restoring it: left out, said once, start-up goes on
    replicas.append(fresh)
    assert "cube" not in fresh.tools and "shout" in fresh.tools
    a.admin.add(SQUARE, ADDRESS, caller="admin")
    wait_until(lambda: "square" in fresh.tools and "square" in b.tools, timeout_s=WITHIN_A_SECOND)
    warnings = [r for r in caplog.records if "cannot be applied" in r.getMessage()]
    assert len(warnings) == 1 and "complex" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # a line, not a traceback


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.close()


def test_changes_made_while_a_replica_was_cut_off_reach_it_when_it_reconnects(
    own_server: PostgresServer, replicas: list[Replica]
) -> None:
    dsn = own_server.create_database("tools")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE ROLE follower LOGIN SUPERUSER")
    writer = start_replica(dsn)
    follower = start_replica(dsn.replace("//postgres@", "//follower@"))
    replicas += [writer, follower]
    writer.admin.add(CUBE, ADDRESS, caller="admin")
    wait_until(lambda: "cube" in follower.tools, timeout_s=WITHIN_A_SECOND)

    with psycopg.connect(dsn, autocommit=True) as db:  # follower may not come back, yet
        db.execute("ALTER ROLE follower NOLOGIN")
    own_server.kill()  # SIGKILL: every connection goes, what was committed stays
    own_server.start()
    resumed(lambda: writer.admin.add(SQUARE, ADDRESS, caller="admin"))
    writer.admin.remove("cube", caller="admin")
    assert [c.action for c in writer.admin.history()] == ["added", "added", "removed"]
    assert not follower.notifications.wait_listening(0.5)  # cut off: it heard none of it
    assert "cube" in follower.tools and "square" not in follower.tools

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("ALTER ROLE follower LOGIN")
    wait_until(lambda: "square" in follower.tools and "cube" not in follower.tools,
               timeout_s=5)  # its listener retries every second, then catches up  # fmt: skip
    assert follower.admin.position == writer.admin.position


def test_without_the_database_a_change_is_refused_and_not_applied(
    own_server: PostgresServer, replicas: list[Replica]
) -> None:
    dsn = own_server.create_database("tools")
    a = start_replica(dsn)
    replicas.append(a)
    own_server.kill()
    with pytest.raises(StateUnavailableError, match=r"cannot be reached.*retry when it is back"):
        a.admin.add(CUBE, ADDRESS, caller="admin")
    assert "cube" not in a.tools
    with pytest.raises(StateUnavailableError):
        a.admin.remove("shout", caller="admin")
    assert "shout" in a.tools

    own_server.start()
    resumed(lambda: a.admin.add(CUBE, ADDRESS, caller="admin"))  # back: no restart needed
    assert "cube" in a.tools
    assert [(c.action, c.tool) for c in a.admin.history()] == [("added", "cube")]


def resumed(change: Callable[[], object]) -> None:
    """Make ``change`` as a client would once the database is back: retrying while it is
    refused (the pool reconnects in the background, within seconds)."""

    def made() -> bool:
        try:
            change()
        except StateUnavailableError:
            return False
        return True

    wait_until(made, timeout_s=30)


class RacingLog(PostgresToolChangeLog):
    """Before its next append, runs ``race``: another replica's change lands in between."""

    race: Callable[[], object] | None = None

    def append(self, change: ToolChange) -> int:
        if (race := self.race) is not None:
            self.race = None
            race()
        return super().append(change)


def test_racing_changes_to_one_tool_end_the_same_on_every_replica(
    state_dsn: str, replicas: list[Replica]
) -> None:
    """b adds cube while a's cube, committed just before, has not reached b: the log's
    order decides (b's is later), on b, on a, and on a replica started afterwards."""
    a = start_replica(state_dsn)
    replicas.append(a)
    database = Database(state_dsn, application="b").open()
    log = RacingLog(database, AGENT)
    b = ToolAdmin(ToolCallingAgent([shout], scripted(), name=AGENT, description="Finds."), log)
    b.restore()
    b.follow(Unheard())  # it learns of a's change only by reading the log
    try:
        log.race = lambda: a.admin.add({**CUBE, "description": "a's"}, ADDRESS, caller="admin")
        change = b.add({**CUBE, "description": "b's"}, ADDRESS, caller="admin")
        assert change.action == "added"  # b had not seen a's when it checked
        mine = b.agent.tools["cube"]
        b.remove("shout", caller="admin")  # reads the log first: a's cube, then its own
        assert b.agent.tools["cube"] is mine and mine.description == "b's"
        wait_until(lambda: a.tools["cube"].description == "b's", timeout_s=WITHIN_A_SECOND)
        later = start_replica(state_dsn)
        replicas.append(later)
        assert later.tools["cube"].description == "b's"
        assert set(later.tools) == set(a.tools) == set(b.agent.tools)
    finally:
        b.close()
        database.close()


def test_the_channel_is_a_valid_name_for_any_agent() -> None:
    long = tool_changes_channel("a" * 500)
    assert len(long) <= 63 and long != tool_changes_channel("a" * 499)
    assert long == tool_changes_channel("a" * 500)


def test_replicas_starting_at_once_record_a_changed_definition_once(state_dsn: str) -> None:
    databases = [Database(state_dsn, application=f"starter-{n}").open() for n in range(4)]
    try:
        for instructions in ("Be brief.", "Be thorough."):  # the first start, then a change
            agents = [ToolCallingAgent([shout], scripted(), name=AGENT, description="Facts.",
                                       instructions=instructions) for _ in databases]  # fmt: skip
            logs = [PostgresToolChangeLog(d, AGENT) for d in databases]
            with ThreadPoolExecutor(len(logs)) as pool:
                recorded = list(pool.map(record_definition, agents, logs))
            assert sorted(len(r) for r in recorded)[:-1] == [0] * (len(logs) - 1)
        actions = [c.action for c in PostgresToolChangeLog(databases[0], AGENT).read()]
        assert actions == ["configured", "instructions_changed", "configured"]
    finally:
        for database in databases:
            database.close()
