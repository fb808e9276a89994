"""Conversations in the shared database: the ``SessionStore`` of replicas on many machines.

``PostgresSessionStore`` keeps what ``SessionStore`` keeps, bounded the same way
(see ``mesh.host.sessions``), in tables shared by every replica of every agent,
its rows namespaced by agent. A turn is acknowledged when its transaction
commits, so it survives the service and the database being killed after.

Claims. Runs of one session take turns across every replica: a claim is a
PostgreSQL session-level advisory lock (``pg_try_advisory_lock``) on a key
drawn from the agent and the session id, taken on one connection the store
keeps for its claims, not a pooled one, because the lock lives as long as
its connection. When a process dies its connection dies with it and
PostgreSQL lets its locks go, so a claim whose holder died is taken over at
once. The holder's run id is written beside the lock (``mesh_session_claims``)
only to name the run to whoever is refused. If that connection breaks (the
database restarted, the network dropped), the claims held on it are gone:
the store connects again at its next claim and takes them again where no
other run took them meanwhile; a run whose claim was taken goes on, no
longer alone on its session.

Bytes. The store-wide budget counts each kept turn's JSON plus ``TURN_ROW_BYTES``
for its row, in one row per agent (``mesh_session_usage``) changed in the
transaction that changes the turns, so that no table is ever summed. Every
write takes that row's lock first: an agent's writers queue in one order and
cannot deadlock on each other's sessions.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.rows import class_row

from mesh.agents.conversation import Turn
from mesh.errors import StateUnavailableError
from mesh.host.sessions import (
    DEFAULT_PAGE_SIZE,
    MAX_SESSIONS_BYTES,
    MAX_TURNS,
    MONTH_S,
    SessionInfo,
    SessionTurn,
    budget_marks,
    next_page,
    page_length,
    read_page_token,
    read_turns,
    session_bounds,
    session_busy,
    session_turns,
    stored_body,
    unknown_session,
)
from mesh.state.database import Database, unavailable
from mesh.state.usage import lock_usage

__all__ = ["TURN_ROW_BYTES", "PostgresSessionStore", "claim_key"]

log = logging.getLogger(__name__)

TURN_ROW_BYTES = 100
"""What the budget counts for a turn's row and index entries, beside its JSON."""
_INFO: LiteralString = "session_id, created, updated, turn_count, dropped_turns"
Db = psycopg.Connection[Any]
T = TypeVar("T")


def claim_key(agent: str, session_id: str) -> int:
    """The advisory lock that claims a session: 64 bits of a sha256 of agent and id."""
    named = "\0".join(("smolmesh-session", agent, session_id)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(named).digest()[:8], "big", signed=True)


class PostgresSessionStore:
    """``Sessions`` in the shared database, for one agent (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        agent: str,
        *,
        max_bytes: int = MAX_SESSIONS_BYTES,
        max_turns: int = MAX_TURNS,
        retention_s: float = MONTH_S,
    ) -> None:
        self.database = database
        self.agent = agent
        self.max_bytes = max_bytes
        self.max_turns = max_turns
        self.max_session_bytes, self.max_turn_chars = session_bounds(max_bytes, max_turns)
        self._token = uuid.uuid4().hex
        """Marks this store's rows of claims."""
        self._lock = threading.Lock()
        """Guards the claims connection and ``_held``."""
        self._claims_db: Db | None = None
        self._held: dict[str, str] = {}
        """The sessions this store claims, and the run of each."""
        self._closed = False
        with database.transaction() as db:
            self._queue(db)
            _, freed = self._forget(db, "updated < %s", (time.time() - retention_s,))
            usage = self._count(db, -freed)
            self._keep_within_budget(db, usage, keep="")
            db.execute(_FORGET_CLAIMS_NOT_HELD, (agent,))  # left by processes that died

    # ------------------------------------------------------------------ runs

    @contextmanager
    def claim(self, session_id: str, run_id: str = "") -> Iterator[None]:
        """Hold the session for one run (``run_id``, named to whoever is refused), whichever
        replica asks: SessionBusyError while another run holds it, StateUnavailableError
        while the database is away."""
        self._take(session_id, run_id)
        try:
            yield
        finally:
            self._let_go(session_id)

    def load(self, session_id: str) -> builtins.list[Turn]:
        """The session's turns, oldest first, for the run to continue from (none for a new
        session; a turn that no longer reads is skipped)."""
        with self.database.transaction() as db:
            rows = db.execute(
                "SELECT body FROM mesh_session_turns WHERE agent = %s AND session_id = %s"
                " ORDER BY id",
                (self.agent, session_id),
            ).fetchall()
        return read_turns(session_id, [body for (body,) in rows])

    def append(self, session_id: str, run_id: str, turn: Turn) -> SessionInfo:
        """Add the turn of a run that ended with an answer (clipped to ``max_turn_chars``);
        the session begins with its first turn, and drops its oldest beyond its bounds.
        Kept (committed) once this returns."""
        body = stored_body(turn, self.max_turn_chars)
        now = time.time()
        with self.database.transaction() as db:
            self._queue(db)
            count, size = _one(
                db,
                "INSERT INTO mesh_sessions (agent, session_id, created, updated, turn_count,"
                " dropped_turns, bytes) VALUES (%s, %s, %s, %s, 1, 0, %s)"
                " ON CONFLICT (agent, session_id) DO UPDATE SET"
                " updated = greatest(mesh_sessions.updated, excluded.updated),"
                " turn_count = mesh_sessions.turn_count + 1,"
                " bytes = mesh_sessions.bytes + excluded.bytes RETURNING turn_count, bytes",
                (self.agent, session_id, now, now, len(body)),
            )
            db.execute(
                "INSERT INTO mesh_session_turns (agent, session_id, run_id, time, steps, bytes,"
                " body) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (self.agent, session_id, run_id, now, turn.steps, len(body), body),
            )
            freed = self._drop_oldest_turns(db, session_id, count, size)
            usage = self._count(db, len(body) + TURN_ROW_BYTES - freed)
            self._keep_within_budget(db, usage, keep=session_id)
            return self._info(db, session_id)

    # -------------------------------------------------------------- sessions

    def list(
        self, page_size: int = DEFAULT_PAGE_SIZE, page_token: str = ""
    ) -> tuple[builtins.list[SessionInfo], str]:
        """Sessions, most recently updated first, and the token of the next page ("" after
        the last). ``page_size`` 0 or less: the default; above ``MAX_PAGE_SIZE``: that."""
        size = page_length(page_size)
        where: LiteralString = ""
        args: tuple[Any, ...] = ()
        if page_token:
            updated, last = read_page_token(page_token)
            where = " AND (updated < %s OR (updated = %s AND session_id < %s))"
            args = (updated, updated, last)
        query: LiteralString = (
            "SELECT " + _INFO + " FROM mesh_sessions WHERE agent = %s" + where
            + " ORDER BY updated DESC, session_id DESC LIMIT %s"
        )  # fmt: skip
        with self.database.transaction() as db:
            infos = db.cursor(row_factory=class_row(SessionInfo))
            rows = infos.execute(query, (self.agent, *args, size + 1)).fetchall()
        return next_page(rows, size)

    def get(self, session_id: str) -> tuple[SessionInfo, builtins.list[SessionTurn]]:
        """The session and its turns, oldest first; NotFoundError if it is not kept."""
        with self.database.transaction() as db:
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot
            info = self._info(db, session_id)
            rows = db.execute(
                "SELECT run_id, time, steps, body FROM mesh_session_turns"
                " WHERE agent = %s AND session_id = %s ORDER BY id",
                (self.agent, session_id),
            ).fetchall()
        return info, session_turns(session_id, rows)

    def delete(self, session_id: str) -> None:
        """Forget the session: NotFoundError if it is not kept, SessionBusyError while a
        run (of any replica) holds it."""
        with self.database.transaction() as db:
            self._queue(db)
            # Held until the transaction ends: no run claims the session meanwhile.
            (free,) = _one(db, "SELECT pg_try_advisory_xact_lock(%s)",
                           (claim_key(self.agent, session_id),))  # fmt: skip
            if not free:
                raise session_busy(session_id, self._holder(db, session_id))
            deleted, freed = self._forget(db, "session_id = %s", (session_id,))
            if not deleted:
                raise unknown_session(session_id)
            self._count(db, -freed)

    def close(self) -> None:
        """Let every claim go (with its connection); the shared pool stays open."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, {}
            db = self._claims_db
            if held and db is not None and not db.broken:
                with suppress(psycopg.Error):  # names only: the locks go with the connection
                    db.execute("DELETE FROM mesh_session_claims WHERE token = %s", (self._token,))
            self._disconnect()

    # ---------------------------------------------------------------- claims

    def _take(self, session_id: str, run_id: str) -> None:
        key = claim_key(self.agent, session_id)

        def take(db: Db) -> str | None:
            """None when taken, else the run holding it ("" if unnamed)."""
            (got,) = _one(db, "SELECT pg_try_advisory_lock(%s)", (key,))
            if not got:
                return self._holder(db, session_id)
            try:
                self._name_holder(db, session_id, run_id, key)
            except psycopg.Error:
                if not db.broken:  # (else the lock went with the connection)
                    db.execute("SELECT pg_advisory_unlock(%s)", (key,))
                raise
            return None

        with self._lock:
            if self._closed:
                raise RuntimeError("the session store is closed")
            if session_id in self._held:  # advisory locks stack within one connection
                raise session_busy(session_id, self._held[session_id])
            holder = self._on_claims_connection(take)
            if holder is not None:
                raise session_busy(session_id, holder)
            self._held[session_id] = run_id

    def _let_go(self, session_id: str) -> None:
        with self._lock:
            db = self._claims_db
            if self._held.pop(session_id, None) is None or db is None or db.broken:
                return  # closed meanwhile, or lost with its connection: nothing is held
            try:
                db.execute(
                    "DELETE FROM mesh_session_claims WHERE agent = %s AND session_id = %s"
                    " AND token = %s",
                    (self.agent, session_id, self._token),
                )
                db.execute("SELECT pg_advisory_unlock(%s)", (claim_key(self.agent, session_id),))
            except psycopg.Error as err:  # closing the connection lets the lock go
                self._disconnect(err)
                with suppress(StateUnavailableError):  # else at the next claim
                    self._connected()  # and the store's other claims are taken again

    def _on_claims_connection(self, work: Callable[[Db], T]) -> T:
        """``work`` on the claims connection, connected first if need be, and once more on a
        new connection if that one was broken; StateUnavailableError if the database cannot
        be reached. Under the lock."""
        while True:
            fresh = self._claims_db is None
            db = self._connected()
            try:
                return work(db)
            except psycopg.OperationalError as err:
                if db.broken:
                    self._disconnect(err)
                if fresh or not db.broken:
                    raise unavailable(self.database.dsn, err) from None

    def _connected(self) -> Db:
        """The claims connection, (re)connected, with every claim of ``_held`` taken again
        where it is free (the others are lost). Under the lock."""
        db = self._claims_db
        if db is not None and not db.closed and not db.broken:
            return db
        self._disconnect()
        arguments = self.database.connect_arguments()
        try:
            db = psycopg.connect(self.database.dsn, autocommit=True, **arguments)  # type: ignore[arg-type]
            self._claims_db = db
            for session_id, run_id in list(self._held.items()):
                key = claim_key(self.agent, session_id)
                (got,) = _one(db, "SELECT pg_try_advisory_lock(%s)", (key,))
                if got:
                    self._name_holder(db, session_id, run_id, key)
                else:
                    del self._held[session_id]
                    log.warning("session %r: run %r lost its claim with the state database"
                                " connection; another run has the session",
                                session_id, run_id)  # fmt: skip
        except psycopg.OperationalError as err:
            self._disconnect()
            raise unavailable(self.database.dsn, err) from None
        return db

    def _disconnect(self, err: BaseException | None = None) -> None:
        """Close the claims connection: PostgreSQL lets go of its locks. Under the lock."""
        db, self._claims_db = self._claims_db, None
        if err is not None and self._held:
            log.warning("state database connection of the session claims lost (%s): its claims "
                        "are taken again when it is back", str(err).strip()[:200])  # fmt: skip
        if db is not None:
            db.close()

    def _name_holder(self, db: Db, session_id: str, run_id: str, key: int) -> None:
        db.execute(
            "INSERT INTO mesh_session_claims (agent, session_id, run_id, lock_key, token, since)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (agent, session_id) DO UPDATE SET"
            " run_id = excluded.run_id, lock_key = excluded.lock_key,"
            " token = excluded.token, since = excluded.since",
            (self.agent, session_id, run_id, key, self._token, time.time()),
        )

    def _holder(self, db: Db, session_id: str) -> str:
        """The run holding a claimed session, as far as is known ("" if not)."""
        row = db.execute(
            "SELECT run_id FROM mesh_session_claims WHERE agent = %s AND session_id = %s",
            (self.agent, session_id),
        ).fetchone()
        return str(row[0]) if row is not None else ""

    # ------------------------------------------------------------- internals

    def _queue(self, db: Db) -> None:
        """Wait for the agent's other writers (of any replica): see ``mesh.state.usage``."""
        lock_usage(db, "mesh_session_usage", "agent", self.agent)

    def _count(self, db: Db, change: int) -> int:
        """Add ``change`` to the bytes the budget counts; their total."""
        (usage,) = _one(
            db,
            "UPDATE mesh_session_usage SET bytes = bytes + %s WHERE agent = %s RETURNING bytes",
            (change, self.agent),
        )
        return int(usage)

    def _info(self, db: Db, session_id: str) -> SessionInfo:
        infos = db.cursor(row_factory=class_row(SessionInfo))
        info = infos.execute(
            "SELECT " + _INFO + " FROM mesh_sessions WHERE agent = %s AND session_id = %s",
            (self.agent, session_id),
        ).fetchone()
        if info is None:
            raise unknown_session(session_id)
        return info

    def _forget(self, db: Db, where: LiteralString, args: tuple[Any, ...]) -> tuple[int, int]:
        """Delete the agent's sessions ``where`` says (their turns with them); how many, and
        the bytes the budget counted for them."""
        rows = db.execute(
            "DELETE FROM mesh_sessions WHERE agent = %s AND " + where
            + " RETURNING bytes + turn_count * %s",
            (self.agent, *args, TURN_ROW_BYTES),
        ).fetchall()  # fmt: skip
        return len(rows), sum(int(size) for (size,) in rows)

    def _drop_oldest_turns(self, db: Db, session_id: str, count: int, size: int) -> int:
        """While the session is over ``max_turns`` or ``max_session_bytes``, drop its oldest
        turn (never its last); the bytes the budget counted for them."""
        freed = 0
        while count > 1 and (count > self.max_turns or size > self.max_session_bytes):
            (dropped,) = _one(
                db,
                "DELETE FROM mesh_session_turns WHERE id = (SELECT id FROM mesh_session_turns"
                " WHERE agent = %s AND session_id = %s ORDER BY id LIMIT 1) RETURNING bytes",
                (self.agent, session_id),
            )
            count, size = _one(
                db,
                "UPDATE mesh_sessions SET turn_count = turn_count - 1, bytes = bytes - %s,"
                " dropped_turns = dropped_turns + 1 WHERE agent = %s AND session_id = %s"
                " RETURNING turn_count, bytes",
                (dropped, self.agent, session_id),
            )
            freed += dropped + TURN_ROW_BYTES
        return freed

    def _keep_within_budget(self, db: Db, usage: int, keep: str) -> None:
        """Past three eighths of ``max_bytes``, forget the least recently updated sessions
        (never ``keep``, the one just written): as few as leave a quarter."""
        above, down_to = budget_marks(self.max_bytes)
        if usage <= above:
            return
        _, freed = self._forget(
            db,
            "session_id IN (SELECT session_id FROM (SELECT session_id,"
            " sum(bytes + turn_count * %s) OVER (ORDER BY updated, session_id ROWS UNBOUNDED"
            " PRECEDING) - (bytes + turn_count * %s) AS before FROM mesh_sessions"
            " WHERE agent = %s AND session_id <> %s) AS oldest WHERE before < %s)",
            (TURN_ROW_BYTES, TURN_ROW_BYTES, self.agent, keep, usage - down_to),
        )
        self._count(db, -freed)


def _one(db: Db, query: LiteralString, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row of a statement that returns one (the agent's usage, a row just written)."""
    row = db.execute(query, args).fetchone()
    assert row is not None, f"no row from {query[:60]!r}"
    return tuple(row)


_FORGET_CLAIMS_NOT_HELD: LiteralString = """
DELETE FROM mesh_session_claims AS c WHERE c.agent = %s AND NOT EXISTS (
    SELECT 1 FROM pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND ((l.classid::bigint << 32) | l.objid::bigint) = c.lock_key)
"""
"""A bigint advisory key is in pg_locks as its high half (classid) and its low (objid)."""
