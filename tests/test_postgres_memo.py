"""The memo in the shared state database: what it does on SQLite, it does on PostgreSQL,
for writers in several processes at once, and through a crash of the database server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mesh.errors import StateUnavailableError, ToolExecutionError
from mesh.state.database import Database
from mesh.state.memo import PostgresMemoStore
from mesh.state.registry import close_state
from mesh.tools.memo import MAX_MEMO_BYTES, MemoTool, SqliteMemoStore
from tests.postgres_server import PostgresServer
from tests.support import wait_until

ROOT = Path(__file__).resolve().parent.parent

MakeMemo = Callable[..., MemoTool]
"""``make(namespace="default", max_bytes=MAX_MEMO_BYTES)``: a memo on the test's store."""


@pytest.fixture
def database(state_dsn: str) -> Iterator[Database]:
    opened = Database(state_dsn).open()
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgres"])
def make_memo(request: pytest.FixtureRequest, tmp_path: Path) -> MakeMemo:
    """Memos that share one store, whichever the backend."""
    if request.param == "sqlite":
        path = tmp_path / "m.db"

        def on_sqlite(namespace: str = "default", max_bytes: int = MAX_MEMO_BYTES) -> MemoTool:
            return MemoTool(namespace=namespace, store=SqliteMemoStore(path, max_bytes))

        return on_sqlite
    database: Database = request.getfixturevalue("database")

    def on_postgres(namespace: str = "default", max_bytes: int = MAX_MEMO_BYTES) -> MemoTool:
        return MemoTool(namespace=namespace,
                        store=PostgresMemoStore(database, max_bytes=max_bytes))  # fmt: skip

    return on_postgres


def usage(database: Database, namespace: str = "default") -> tuple[int, int]:
    """What the usage row says the namespace holds, and what its entries hold."""
    with database.transaction() as db:
        (counted,) = db.execute(
            "SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0) FROM mesh_memo"
            " WHERE namespace = %s", (namespace,)
        ).fetchone() or (0,)  # fmt: skip
        (used,) = db.execute(
            "SELECT bytes FROM mesh_memo_usage WHERE namespace = %s", (namespace,)
        ).fetchone() or (0,)
    return int(used), int(counted)


# The same behaviour on both backends.


def test_set_get_list_delete(make_memo: MakeMemo) -> None:
    memo = make_memo()
    assert memo("set", "year", 2015) == "stored 'year'"
    assert memo(action="set", key="name", value={"lang": "go", "tags": ["rpc"]})
    assert memo("set", "ünïcode", ["é", None, 1.5]) == "stored 'ünïcode'"
    assert memo("get", "year") == 2015
    assert memo("get", "name") == {"lang": "go", "tags": ["rpc"]}
    assert memo("get", "ünïcode") == ["é", None, 1.5]
    memo("set", "Zed", 1)
    assert memo("list") == ["Zed", "name", "year", "ünïcode"]  # by their bytes, as SQLite
    assert memo("set", "year", 2016) == "stored 'year'"
    assert make_memo()("get", "year") == 2016  # another memo on the same store sees it
    assert memo("delete", "year") == "deleted 'year'"
    assert memo("delete", "year") == "memo had no entry 'year'"
    assert memo("list") == ["Zed", "name", "ünïcode"]
    with pytest.raises(ToolExecutionError, match=r"no entry 'year'; known keys: \['Zed'"):
        memo("get", "year")
    with pytest.raises(ToolExecutionError, match="needs a key"):
        memo("set")
    with pytest.raises(ToolExecutionError, match="larger than"):
        memo("set", "big", "x" * 70_000)
    with pytest.raises(ToolExecutionError, match="longer than"):
        memo("set", "k" * 300, 1)


def test_namespaces_are_separate(make_memo: MakeMemo) -> None:
    make_memo("a")("set", "k", 1)
    assert make_memo("b")("list") == []
    make_memo("b")("set", "k", 2)
    assert make_memo("a")("get", "k") == 1


def test_writes_past_the_cap_are_refused_and_nothing_is_forgotten(make_memo: MakeMemo) -> None:
    memo = make_memo(max_bytes=256 * 1024)
    stored = 0
    with pytest.raises(ToolExecutionError, match=r"memo is full \(0 MB\): delete keys"):
        for n in range(100):
            memo.set(f"k{n}", "v" * 60_000)
            stored += 1
    assert 3 <= stored < 10
    assert all(memo.get(f"k{n}") == "v" * 60_000 for n in range(stored))
    memo.delete("k0")
    memo.set("again", 1)  # room again once keys are deleted
    assert memo.get("again") == 1


# What only the shared database does.


def test_the_cap_is_exact_per_namespace_and_an_overwrite_that_does_not_grow_is_taken(
    database: Database,
) -> None:
    memo = MemoTool(store=PostgresMemoStore(database, max_bytes=100))
    memo.set("a", "x" * 46)  # 1 + 48 bytes
    memo.set("b", "y" * 46)  # 98 in all
    assert usage(database) == (98, 98)
    memo.set("c", 1)  # 2 bytes: exactly full
    with pytest.raises(ToolExecutionError, match="memo is full"):
        memo.set("d", 1)
    with pytest.raises(ToolExecutionError, match="memo is full"):
        memo.set("a", "x" * 47)  # grows a by one byte
    memo.set("a", "z" * 46)  # the same size: taken
    memo.set("b", "")  # smaller: taken
    assert memo.get("a") == "z" * 46 and memo.get("b") == "" and "d" not in memo("list")
    assert usage(database) == (54, 54)
    MemoTool(namespace="other", store=PostgresMemoStore(database, max_bytes=100)).set("c", 1)
    assert usage(database, "other") == (2, 2)
    with pytest.raises(ToolExecutionError, match="NUL character"):
        memo("set", "nul\x00key", 1)
    assert memo("delete", "nul\x00key") == "memo had no entry 'nul\\x00key'"


WRITER = textwrap.dedent("""
    import sys
    from mesh.state.database import Database
    from mesh.state.memo import PostgresMemoStore
    from mesh.tools.memo import MemoTool

    dsn, me = sys.argv[1], sys.argv[2]
    database = Database(dsn).open()
    memo = MemoTool(store=PostgresMemoStore(database))
    print("ready", flush=True)
    sys.stdin.readline()  # both processes go at once
    for n in range(150):
        memo("set", f"{me}-{n}", {"by": me, "n": n})
        memo("set", f"hot-{n % 5}", me * (n % 7 + 1))  # both overwrite these, sizes vary
        if n % 3 == 0:
            memo("delete", f"{me}-{n}")
    database.close()
""")


def start_writer(dsn: str, me: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, dsn, me],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def test_writers_in_two_processes_lose_nothing_and_keep_the_count_exact(
    state_dsn: str, database: Database
) -> None:
    writers = [start_writer(state_dsn, me) for me in ("p", "q")]
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        for writer in writers:
            assert writer.wait(timeout=100) == 0
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
    memo = MemoTool(store=PostgresMemoStore(database))
    kept = {f"{me}-{n}" for me in ("p", "q") for n in range(150) if n % 3}
    assert set(memo.keys()) == kept | {f"hot-{n}" for n in range(5)}
    assert all(memo.get(key) == {"by": key[0], "n": int(key[2:])} for key in kept)
    written = {me * k for me in ("p", "q") for k in range(1, 8)}
    assert all(memo.get(f"hot-{n}") in written for n in range(5))
    used, counted = usage(database)
    assert used == counted


def test_a_killed_database_fails_calls_clearly_and_service_resumes_by_itself() -> None:
    server = PostgresServer()
    try:
        server.start()
        database = Database(server.dsn()).open()
        memo = MemoTool(store=PostgresMemoStore(database))
        for n in range(20):
            assert memo("set", f"k{n}", n) == f"stored 'k{n}'"  # acknowledged
        server.kill()
        unavailable = r"state database \(postgresql://.*\) cannot be reached.*retry"
        with pytest.raises(StateUnavailableError, match=unavailable):
            memo("set", "while-down", 1)
        with pytest.raises(StateUnavailableError):
            memo("list")
        server.start()

        def listed() -> list[str] | None:
            try:
                return memo.keys()
            except StateUnavailableError:
                return None

        back = wait_until(listed, timeout_s=60)
        assert back is not None and sorted(back) == sorted(f"k{n}" for n in range(20))
        assert all(memo("get", f"k{n}") == n for n in range(20))
        assert memo("set", "after", True) == "stored 'after'"
        database.close()
    finally:
        server.close()


# Which store a memo uses.


@pytest.fixture
def state_from_env(state_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's state set to the test's database, as ``$MESH_STATE_DSN`` does."""
    close_state()
    monkeypatch.setenv("MESH_STATE_DSN", state_dsn)
    yield state_dsn
    close_state()


def test_a_memo_uses_the_state_database_when_there_is_one(
    state_from_env: str, database: Database, tmp_path: Path
) -> None:
    MemoTool()("set", "shared", 1)
    assert MemoTool(store=PostgresMemoStore(database))("get", "shared") == 1
    assert MemoTool().path is None
    assert not (tmp_path / "memo.sqlite3").exists()  # $MESH_MEMO_PATH: not used
    named = MemoTool(tmp_path / "named.db")  # a file named by its caller is that file
    assert named.path == tmp_path / "named.db" and named("list") == []


def test_a_memo_uses_its_file_when_the_state_is_embedded(tmp_path: Path) -> None:
    close_state()
    memo = MemoTool()
    assert isinstance(memo.store, SqliteMemoStore) and memo.path == tmp_path / "memo.sqlite3"
    with pytest.raises(ValueError, match="a path or a store"):
        MemoTool(tmp_path / "m.db", store=memo.store)
