"""``Database``: one process's pool of connections to the shared state, and its errors.

Every store reaches PostgreSQL through ``transaction()``: a pooled
connection, committed when the block ends (rolled back if it raises), and
the driver's connection errors turned into ``StateUnavailableError`` in this
one place, so that a call needing the database while it is away fails fast
with UNAVAILABLE and a clear message. The pool checks a connection before
lending it and reconnects in the background, so service resumes by itself
when the database is back.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
import psycopg_pool
from psycopg import sql

from mesh.errors import StateUnavailableError
from mesh.state.migrations import migrate
from mesh.state.setting import redacted
from mesh.text import clip

__all__ = ["Database", "unavailable"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3
"""How long a call waits for a connection before it is refused (the database is away)."""
STATEMENT_TIMEOUT_MS = 15_000
MAX_CONNECTIONS = 8
RECONNECT_S = 10.0
"""A lost connection is retried in the background (backing off) for this long."""
OPEN_TIMEOUT_S = 30.0
"""At start-up the database may still be starting too (a StatefulSet beside the mesh)."""


def unavailable(dsn: str, err: BaseException) -> StateUnavailableError:
    """The driver's error, as callers see it: which database, what the driver said (short)."""
    detail = clip(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__,
                  200)  # fmt: skip
    return StateUnavailableError(
        f"the state database ({redacted(dsn)}) cannot be reached: {detail}; retry when it is back"
    )


class Database:
    """A pool of connections to the state database; ``open`` runs the schema migrations."""

    def __init__(self, dsn: str, *, application: str = "smolmesh", max_size: int = MAX_CONNECTIONS
                 ) -> None:  # fmt: skip
        self.dsn = dsn
        self.application = application
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            reconnect_timeout=RECONNECT_S,  # then the next call that needs it tries afresh
            check=_check_if_idle,
            kwargs=self.connect_arguments(),
            name=f"state-{application}",
        )

    def connect_arguments(self) -> dict[str, object]:
        """What every connection of this process is opened with (the listener's too)."""
        return {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": f"{self.application}-{os.getpid()}"[:63],
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        }

    def open(self, timeout_s: float = OPEN_TIMEOUT_S) -> Database:
        """Connect (waiting up to ``timeout_s`` for the database to come up) and bring the
        schema up to date; StateUnavailableError if it does not answer in time."""
        log.info("state database %s: connecting (waiting up to %.0f s)", redacted(self.dsn),
                 timeout_s)  # fmt: skip
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except psycopg_pool.PoolTimeout as err:
            self._pool.close()
            raise unavailable(self.dsn, err) from None
        with self.transaction() as db:
            applied = migrate(db)
        if applied:
            log.info("state database %s: applied %s", redacted(self.dsn), ", ".join(applied))
        return self

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection in a transaction: committed at the end of the block."""
        try:
            with self._pool.connection() as db:
                yield db
                _used[db] = time.monotonic()
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as err:
            raise unavailable(self.dsn, err) from None

    def fetch_one(self, query: Query, params: Params = ()) -> tuple[Any, ...] | None:
        """One statement, its own transaction (one round trip, where ``transaction`` takes
        two): its first row, if it returns any."""
        with self._statement() as db:
            return db.execute(query, params).fetchone()

    def fetch_all(self, query: Query, params: Params = ()) -> list[tuple[Any, ...]]:
        """One statement, its own transaction: its rows."""
        with self._statement() as db:
            return db.execute(query, params).fetchall()

    @contextmanager
    def _statement(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection for statements that commit as they run (autocommit)."""
        try:
            with self._pool.connection() as db:
                db.autocommit = True
                try:
                    yield db
                finally:
                    db.autocommit = False
                _used[db] = time.monotonic()
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as err:
            raise unavailable(self.dsn, err) from None

    def close(self) -> None:
        self._pool.close()


Query = LiteralString | bytes | sql.SQL | sql.Composed
"""Our own statements (a caller's text is only ever a parameter)."""
Params = Sequence[Any] | Mapping[str, Any]
_used: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()
"""When each pooled connection last answered: one that answered within
``CHECK_AFTER_IDLE_S`` is lent without a check (a round trip saved on every call)."""
CHECK_AFTER_IDLE_S = 1.0


def _check_if_idle(db: psycopg.Connection[Any]) -> None:
    """The pool's check before it lends a connection: only one idle for a while is probed
    (the database may have gone and come back meanwhile). A connection that broke within the
    last second fails its next call (UNAVAILABLE, retryable) and the pool drops it."""
    if time.monotonic() - _used.get(db, 0.0) > CHECK_AFTER_IDLE_S:
        psycopg_pool.ConnectionPool.check_connection(db)
