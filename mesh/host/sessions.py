"""Conversations kept across runs and restarts: the turns of each session.

A run given a ``session_id`` continues that conversation. The service claims
the session (``claim``: runs of one session take turns, a second is refused
with SessionBusyError), loads its turns (``load``), runs the task with them
as the agent's ``history``, and appends the run's turn (``append``) when it
ended with an answer; a run that fails adds nothing. Claims live in the file
with the process that holds them, so the processes sharing it (replicas on
one machine) take turns too, and a claim whose process died is taken over.

Callers choose session ids and tasks, so what is kept is bounded throughout:
a turn is clipped to ``max_turn_chars`` (its long texts cut; a turn of very
many steps keeps only its task and answer); a session keeps its newest
``max_turns`` turns within ``max_session_bytes``, dropping the oldest
(counted in ``dropped_turns``); and the file keeps within ``max_bytes``, its
share of the service's data limit: past three eighths of it, the least
recently updated sessions are forgotten until a quarter is left. Sessions not
updated for ``retention_s`` are dropped when a service starts. SQLite (WAL,
synchronous=FULL), one file per agent, as the run ledger; or, for replicas on
many machines, the shared database (``mesh.host.postgres_sessions``), bounded
the same way with the helpers at the end of this module.
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mesh.agents.conversation import Turn
from mesh.errors import ConfigError, InvalidRequestError, NotFoundError, SessionBusyError
from mesh.paths import data_path
from mesh.sqlite_usage import open_bounded, used_bytes
from mesh.text import clip

__all__ = ["SessionInfo", "SessionStore", "SessionTurn", "Sessions", "default_sessions_path"]

log = logging.getLogger(__name__)

MONTH_S = 30 * 24 * 3600.0
MAX_SESSIONS_BYTES = 16 * 1024 * 1024
MAX_TURNS = 20
"""As many as an agent reads by default (``max_history_turns``)."""
MAX_SESSION_BYTES = 1024 * 1024
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_MAX_TOKEN_CHARS = 400
_INFO = "session_id, created, updated, turn_count, dropped_turns"


def default_sessions_path(agent: str) -> Path:
    return data_path("MESH_SESSIONS_DIR", "sessions") / f"{agent}.sqlite3"


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    created: float
    updated: float
    turn_count: int
    dropped_turns: int


@dataclass(frozen=True)
class SessionTurn:
    run_id: str
    task: str
    answer_text: str
    time: float
    steps: int


class Sessions(Protocol):
    """Where conversations are kept: this file per agent (``SessionStore``), or the shared
    database (``mesh.host.postgres_sessions``). Both bound what they keep the same way."""

    def claim(self, session_id: str, run_id: str = "") -> AbstractContextManager[None]: ...

    def load(self, session_id: str) -> builtins.list[Turn]: ...

    def append(self, session_id: str, run_id: str, turn: Turn) -> SessionInfo: ...

    def list(self, page_size: int = DEFAULT_PAGE_SIZE, page_token: str = ""
             ) -> tuple[builtins.list[SessionInfo], str]: ...  # fmt: skip

    def get(self, session_id: str) -> tuple[SessionInfo, builtins.list[SessionTurn]]: ...

    def delete(self, session_id: str) -> None: ...

    def close(self) -> None: ...


class SessionStore:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = MAX_SESSIONS_BYTES,
        max_turns: int = MAX_TURNS,
        retention_s: float = MONTH_S,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_turns = max_turns
        self.max_session_bytes, self.max_turn_chars = session_bounds(max_bytes, max_turns)
        self._token = uuid.uuid4().hex
        """Marks this store's claims: another store of this process may share the file."""
        self._lock = threading.Lock()
        self._db = open_bounded(path, max_bytes)
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)
            old = (time.time() - retention_s,)
            self._db.execute(f"DELETE FROM turns WHERE session_id IN ({_UPDATED_BEFORE})", old)
            self._db.execute(f"DELETE FROM sessions WHERE session_id IN ({_UPDATED_BEFORE})", old)
            claims = self._db.execute("SELECT session_id, pid, token FROM claims").fetchall()
            for session_id, pid, token in claims:
                if not _held(pid, token):
                    self._db.execute("DELETE FROM claims WHERE session_id = ?", (session_id,))
            self._keep_within_budget(keep="")
        _OPEN_STORES.add(self._token)

    # ------------------------------------------------------------------ runs

    @contextmanager
    def claim(self, session_id: str, run_id: str = "") -> Iterator[None]:
        """Hold the session for one run (``run_id``, named to whoever is refused):
        SessionBusyError while another run holds it."""
        with self._lock, self._db:
            self._refuse_if_held(session_id)
            self._db.execute(
                "INSERT OR REPLACE INTO claims (session_id, run_id, pid, token, since)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, run_id, os.getpid(), self._token, time.time()),
            )
        try:
            yield
        finally:
            with self._lock:
                if self._token in _OPEN_STORES:  # closed meanwhile: its claims are void anyway
                    with self._db:
                        self._db.execute(
                            "DELETE FROM claims WHERE session_id = ? AND token = ?",
                            (session_id, self._token),
                        )

    def load(self, session_id: str) -> builtins.list[Turn]:
        """The session's turns, oldest first, for the run to continue from (none for a new
        session; a turn the file no longer reads is skipped)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM turns WHERE session_id = ? ORDER BY id", (session_id,)
            ).fetchall()
        return read_turns(session_id, [body for (body,) in rows])

    def append(self, session_id: str, run_id: str, turn: Turn) -> SessionInfo:
        """Add the turn of a run that ended with an answer (clipped to ``max_turn_chars``);
        the session begins with its first turn, and drops its oldest beyond its bounds."""
        body = stored_body(turn, self.max_turn_chars)
        now = time.time()
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO sessions (session_id, created, updated, turn_count, dropped_turns,"
                " bytes) VALUES (?, ?, ?, 0, 0, 0) ON CONFLICT DO NOTHING",
                (session_id, now, now),
            )
            self._db.execute(
                "INSERT INTO turns (session_id, run_id, time, steps, bytes, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, run_id, now, turn.steps, len(body), body),
            )
            self._db.execute(
                "UPDATE sessions SET updated = max(updated, ?), turn_count = turn_count + 1,"
                " bytes = bytes + ? WHERE session_id = ?",
                (now, len(body), session_id),
            )
            self._drop_oldest_turns(session_id)
            self._keep_within_budget(keep=session_id)
            return self._info(session_id)

    # -------------------------------------------------------------- sessions

    def list(
        self, page_size: int = DEFAULT_PAGE_SIZE, page_token: str = ""
    ) -> tuple[builtins.list[SessionInfo], str]:
        """Sessions, most recently updated first, and the token of the next page ("" after
        the last). ``page_size`` 0 or less: the default; above ``MAX_PAGE_SIZE``: that."""
        size = page_length(page_size)
        where = ""
        args: tuple[Any, ...] = ()
        if page_token:
            updated, last = read_page_token(page_token)
            where = "WHERE updated < ? OR (updated = ? AND session_id < ?)"
            args = (updated, updated, last)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_INFO} FROM sessions {where}"
                " ORDER BY updated DESC, session_id DESC LIMIT ?",
                (*args, size + 1),
            ).fetchall()
        return next_page([SessionInfo(*row) for row in rows], size)

    def get(self, session_id: str) -> tuple[SessionInfo, builtins.list[SessionTurn]]:
        """The session and its turns, oldest first; NotFoundError if it is not kept."""
        with self._lock:
            info = self._info(session_id)
            rows = self._db.execute(
                "SELECT run_id, time, steps, body FROM turns WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
        return info, session_turns(session_id, rows)

    def delete(self, session_id: str) -> None:
        """Forget the session: NotFoundError if it is not kept, SessionBusyError while a
        run holds it."""
        with self._lock, self._db:
            self._refuse_if_held(session_id)
            self._db.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
            deleted = self._db.execute(
                "DELETE FROM sessions WHERE session_id = ?", (session_id,)
            ).rowcount
        if not deleted:
            raise unknown_session(session_id)

    def close(self) -> None:
        with self._lock:
            _OPEN_STORES.discard(self._token)
            self._db.close()

    # ------------------------------------------------------------- internals

    def _info(self, session_id: str) -> SessionInfo:
        row = self._db.execute(
            f"SELECT {_INFO} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise unknown_session(session_id)
        return SessionInfo(*row)

    def _refuse_if_held(self, session_id: str) -> None:
        row = self._db.execute(
            "SELECT run_id, pid, token FROM claims WHERE session_id = ?", (session_id,)
        ).fetchone()
        if row is None:
            return
        run_id, pid, token = row
        if _held(pid, token):
            raise session_busy(session_id, run_id)
        # else: left by a process that died (or a store since closed): taken over

    def _drop_oldest_turns(self, session_id: str) -> None:
        """While the session is over ``max_turns`` or ``max_session_bytes``, drop its oldest
        turn (never its last). In a write transaction, under the lock."""
        while True:
            count, size = self._db.execute(
                "SELECT turn_count, bytes FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if count <= 1 or (count <= self.max_turns and size <= self.max_session_bytes):
                return
            turn_id, turn_bytes = self._db.execute(
                "SELECT id, bytes FROM turns WHERE session_id = ? ORDER BY id LIMIT 1",
                (session_id,),
            ).fetchone()
            self._db.execute("DELETE FROM turns WHERE id = ?", (turn_id,))
            self._db.execute(
                "UPDATE sessions SET turn_count = turn_count - 1, bytes = bytes - ?,"
                " dropped_turns = dropped_turns + 1 WHERE session_id = ?",
                (turn_bytes, session_id),
            )

    def _keep_within_budget(self, keep: str) -> None:
        """Forget the least recently updated sessions (never ``keep``, the one just written)
        while the file is over three eighths of the budget, down to a quarter (the log, up to
        a quarter, takes what forgetting rewrites on top). In a write transaction, under the
        lock."""
        above, down_to = budget_marks(self.max_bytes)
        if used_bytes(self._db) <= above:
            return
        (others,) = self._db.execute(
            "SELECT count(*) FROM sessions WHERE session_id != ?", (keep,)
        ).fetchone()
        while others and used_bytes(self._db) > down_to:
            batch = max(1, others // 4)
            oldest = (
                "SELECT session_id FROM sessions WHERE session_id != ?"
                " ORDER BY updated, session_id LIMIT ?"
            )
            self._db.execute(f"DELETE FROM turns WHERE session_id IN ({oldest})", (keep, batch))
            self._db.execute(f"DELETE FROM sessions WHERE session_id IN ({oldest})", (keep, batch))
            others -= batch


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, created REAL NOT NULL,
    updated REAL NOT NULL, turn_count INTEGER NOT NULL, dropped_turns INTEGER NOT NULL,
    bytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_by_update ON sessions (updated, session_id);
CREATE TABLE IF NOT EXISTS turns (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL,
    run_id TEXT NOT NULL, time REAL NOT NULL, steps INTEGER NOT NULL, bytes INTEGER NOT NULL,
    body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS turns_by_session ON turns (session_id, id);
CREATE TABLE IF NOT EXISTS claims (session_id TEXT PRIMARY KEY, run_id TEXT NOT NULL,
    pid INTEGER NOT NULL, token TEXT NOT NULL, since REAL NOT NULL);
"""
_OPEN_STORES: set[str] = set()
"""The tokens of the stores open in this process."""
_UPDATED_BEFORE = "SELECT session_id FROM sessions WHERE updated < ?"


# ------------------------------------------- shared by both stores (``Sessions``)


def session_bounds(max_bytes: int, max_turns: int) -> tuple[int, int]:
    """A store's ``max_session_bytes`` and ``max_turn_chars`` (a turn's JSON in characters;
    in bytes, UTF-8, at most a quarter of a session's); ConfigError for ``max_turns`` < 1."""
    if max_turns < 1:
        raise ConfigError(f"a session keeps at least one turn (max_turns={max_turns})")
    max_session_bytes = max(16 * 1024, min(MAX_SESSION_BYTES, max_bytes // 8))
    return max_session_bytes, max_session_bytes // 16


def budget_marks(max_bytes: int) -> tuple[int, int]:
    """Past the first, the least recently updated sessions are forgotten until the second is
    left: three eighths and a quarter of the budget (for SQLite, the log, up to a quarter,
    takes what forgetting rewrites on top)."""
    return max_bytes * 3 // 8, max_bytes // 4


def stored_body(turn: Turn, max_turn_chars: int) -> bytes:
    """What is kept of a turn: its JSON, clipped, in UTF-8."""
    return turn.clipped(max_turn_chars).to_json().encode("utf-8", "surrogatepass")


def read_turn(session_id: str, body: Any) -> Turn | None:
    """A stored turn; None (logged) for one that cannot be read."""
    try:
        if isinstance(body, memoryview):
            body = bytes(body)
        if isinstance(body, bytes):
            body = body.decode("utf-8", "surrogatepass")
        if not isinstance(body, str):
            raise ValueError(f"a turn stored as {type(body).__name__}")
        return Turn.from_json(body)
    except ValueError as err:  # damaged: the conversation goes on without the turn
        log.warning("session %r: a stored turn cannot be read (%s); skipped", session_id, err)
        return None


def read_turns(session_id: str, bodies: Iterable[Any]) -> builtins.list[Turn]:
    return [turn for body in bodies if (turn := read_turn(session_id, body)) is not None]


def session_turns(session_id: str, rows: Iterable[Sequence[Any]]) -> builtins.list[SessionTurn]:
    """``SessionTurn``s of rows of (run_id, time, steps, body), those that read."""
    turns = []
    for run_id, at, steps, body in rows:
        if (turn := read_turn(session_id, body)) is not None:
            turns.append(SessionTurn(run_id, turn.task, turn.answer, at, steps))
    return turns


def page_length(page_size: int) -> int:
    """``page_size`` 0 or less: the default; above ``MAX_PAGE_SIZE``: that."""
    return DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)


def next_page(rows: builtins.list[SessionInfo], size: int
              ) -> tuple[builtins.list[SessionInfo], str]:  # fmt: skip
    """The page of ``size`` from ``size + 1`` rows fetched, and the next page's token."""
    page = rows[:size]
    return page, _page_token(page[-1]) if len(rows) > size else ""


def _page_token(last: SessionInfo) -> str:
    text = json.dumps([last.updated, last.session_id])
    return base64.urlsafe_b64encode(text.encode()).decode()


def read_page_token(token: str) -> tuple[float, str]:
    """Where a page begins: after (updated, session_id); InvalidRequestError for a token no
    store gave."""
    try:
        if len(token) > _MAX_TOKEN_CHARS:
            raise ValueError("too long")
        updated, last = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        if not isinstance(updated, int | float) or not isinstance(last, str):
            raise ValueError("not a position")
    except (ValueError, TypeError) as err:  # binascii.Error is a ValueError
        raise InvalidRequestError(
            f"page_token {clip(repr(token), 40)} is not one this service gave"
        ) from err
    return float(updated), last


def unknown_session(session_id: str) -> NotFoundError:
    return NotFoundError(
        f"no session {clip(session_id, 40)!r} is kept here (unknown, deleted, or forgotten)"
    )


def session_busy(session_id: str, run_id: str) -> SessionBusyError:
    """The refusal of a claim (or a delete) while ``run_id`` ("" if unknown) holds it."""
    which = f" (run {run_id!r})" if run_id else ""
    return SessionBusyError(
        f"session {session_id!r} has a run going{which}: runs of one session take "
        "turns; wait for it to end, or cancel it"
    )


# ------------------------------------------------------------ SQLite claims


def _held(pid: int, token: str) -> bool:
    """Whether a claim is still held: by a store open in this process, or by a process
    still running (a store of this process id that is not open was an earlier life)."""
    return token in _OPEN_STORES if pid == os.getpid() else _alive(pid)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (of this machine) is running."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return False
    return True
