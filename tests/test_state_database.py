"""The shared state's foundation, against a real PostgreSQL: the setting, the migrations
(several replicas starting at once), and notifications across a lost connection."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from mesh.errors import ConfigError, StateUnavailableError
from mesh.state.database import Database
from mesh.state.migrations import migrations
from mesh.state.notifications import Notifications, notify
from mesh.state.setting import redacted, resolve_state
from tests.postgres_server import PostgresServer
from tests.support import wait_until

OPEN_AND_REPORT = """
import sys
from mesh.state.database import Database
Database(sys.argv[1]).open().close()
"""


def test_the_setting_takes_postgresql_dsns_only_and_never_shows_a_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_state("") == ""
    assert resolve_state("postgresql://u@h/db") == "postgresql://u@h/db"
    monkeypatch.setenv("MESH_STATE_DSN", "postgres://env@h/db")
    assert resolve_state("postgresql://config@h/db") == "postgres://env@h/db"  # env wins
    monkeypatch.delenv("MESH_STATE_DSN")
    for bad in ("sqlite:///x.db", "h:5432", "mysql://u:hunter2@h/db", "x" * 100_000):
        with pytest.raises(ConfigError) as refused:
            resolve_state(bad)
        assert "hunter2" not in str(refused.value) and len(str(refused.value)) < 400
    shown = redacted("postgresql://mesh:hunter2@db:5432/mesh?password=hunter2&sslmode=require")
    assert "hunter2" not in shown and "mesh:***@db:5432" in shown and "sslmode" in shown


def test_replicas_starting_at_once_apply_each_migration_once(
    postgres: PostgresServer, state_dsn: str
) -> None:
    starts = [subprocess.Popen([sys.executable, "-c", OPEN_AND_REPORT, state_dsn])
              for _ in range(6)]  # fmt: skip
    assert [p.wait(timeout=60) for p in starts] == [0] * 6
    with psycopg.connect(state_dsn) as db:
        applied = db.execute("SELECT version FROM mesh_migrations ORDER BY version").fetchall()
    assert [v for (v,) in applied] == [m.version for m in migrations()]


def test_a_schema_newer_than_this_code_is_refused(state_dsn: str) -> None:
    Database(state_dsn).open().close()
    with psycopg.connect(state_dsn) as db:
        db.execute("INSERT INTO mesh_migrations (version, name) VALUES (9999, 'future')")
    with pytest.raises(ConfigError, match="9999"):
        Database(state_dsn).open()


def test_a_database_that_never_answers_is_unavailable_in_bounded_time() -> None:
    dsn = "postgresql://nobody:hunter2@127.0.0.1:9/none"  # port 9: nothing listens
    with pytest.raises(StateUnavailableError) as refused:
        Database(dsn).open(timeout_s=1.0)
    assert "hunter2" not in refused.value.message and refused.value.retryable


def test_notifications_are_delivered_after_commit_and_caught_up_after_a_lost_connection() -> None:
    server = PostgresServer()
    try:
        server.start()
        database = Database(server.create_database("notes")).open()
        listener = Notifications(database)
        got: list[str] = []
        resumed = threading.Event()
        listener.subscribe("mesh_test", got.append, resumed.set)
        assert listener.wait_listening(10)
        wait_until(resumed.is_set)
        with database.transaction() as db:
            notify(db, "mesh_test", "one")
            assert got == []  # not before the commit
        wait_until(lambda: got == ["one"])
        with pytest.raises(RuntimeError), database.transaction() as db:
            notify(db, "mesh_test", "rolled back")
            raise RuntimeError("the change fails")

        late: list[str] = []  # a subscriber after the listener connected: followed, caught up
        late_resumed = threading.Event()
        listener.subscribe("mesh_late", late.append, late_resumed.set)
        assert listener.wait_following(10) and late_resumed.is_set()
        with database.transaction() as db:
            notify(db, "mesh_late", "hello")
        wait_until(lambda: late == ["hello"])

        resumed.clear()
        server.kill()
        server.start()
        wait_until(resumed.is_set, timeout_s=20)  # reconnected: subscribers catch up
        wait_until(lambda: _sent(database, "two"), timeout_s=20)
        wait_until(lambda: got[-1:] == ["two"])
        assert got == ["one", "two"]
        listener.close()
        database.close()
    finally:
        server.close()


def _sent(database: Database, payload: str) -> bool:
    """Notify once the pool has its connection back (it is retried in the background)."""
    try:
        with database.transaction() as db:
            notify(db, "mesh_test", payload)
    except StateUnavailableError:
        return False
    return True


def test_a_process_on_files_never_loads_the_postgresql_driver() -> None:
    """Serving, the CLI and the memo on files pay nothing for the driver (about 80 ms)."""
    check = ("import sys, mesh, mesh.cli, mesh.rpc.serving, mesh.rpc.stores, mesh.tools.memo;"
             " sys.exit('psycopg' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0
