"""``SharedRuns``: an agent's runs as every replica of it sees them, in the shared database.

With shared state, a client may land on any replica: GetRun, ListRuns,
WatchRun and Cancel must work there for a run another replica holds. Each
replica still keeps its own runs in memory (``RunStore``: its live watchers
are served from there, at no cost); it also hands them to its ``RunWriter``,
and reads the others' from the database:

- a record or a list: a query (ListRuns lists every replica's runs);
- a watch: the events from the database, then more each time the holding
  replica notifies that it wrote some (``mesh_runs``), or every ``POLL_S``
  in case a notification was lost, until the record says the run is over;
- a cancel: a ``mesh_cancel`` notification that the holding replica acts on
  (its run then ends as cancelled, which the watch shows).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import suppress
from typing import Any, Generic, TypeVar

from mesh.errors import InvalidRequestError, NotFoundError, StateUnavailableError
from mesh.host.run_record import RunFilter, RunRecord
from mesh.host.run_store import page_size_of, run_page_position, run_page_token
from mesh.host.run_writer import RUNS_CHANNEL, RunBytes, RunWriter, runs_message
from mesh.state.database import Database
from mesh.state.notifications import Notifications, notify

__all__ = ["CANCEL_CHANNEL", "SharedRuns", "replica_id"]

log = logging.getLogger(__name__)

E = TypeVar("E")
CANCEL_CHANNEL = "mesh_cancel"
POLL_S = 1.0
END_WAIT_S = 2.0
"""How long a run's end waits for its record to be committed before it goes on anyway
(the database is away: the record is written when it is back)."""
EVENTS_PER_READ = 256


def replica_id(agent: str) -> str:
    """This process's name among the agent's replicas: unique, and readable in the database."""
    return f"{agent}@{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SharedRuns(Generic[E]):
    def __init__(self, database: Database, notifications: Notifications, agent: str,
                 codec: RunBytes[E], *, retention_s: float, max_bytes: int) -> None:  # fmt: skip
        self.database = database
        self.agent = agent
        self.codec = codec
        self.replica = replica_id(agent)
        self.writer = RunWriter(database, agent, self.replica, codec, retention_s=retention_s,
                                max_bytes=max_bytes)  # fmt: skip
        self._watchers: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._lock = threading.Lock()
        self._cancel_here: Callable[[str], object] = lambda run_id: None
        notifications.subscribe(RUNS_CHANNEL, self._on_written, self._wake_every_watcher)
        notifications.subscribe(CANCEL_CHANNEL, self._on_cancel)

    def on_cancel(self, cancel: Callable[[str], object]) -> None:
        """How this replica cancels a run it holds, when another replica asks."""
        self._cancel_here = cancel

    # ------------------------------------------------------------- writing

    def changed(self, record: RunRecord, events: Sequence[tuple[int, E, int]] = ()) -> None:
        """The run's record as it now is, and its new kept events ``(index, event, size)``."""
        self.writer.put(record.run_id, record, events)

    def added(self, run_id: str, events: Sequence[tuple[int, E, int]]) -> None:
        if events:
            self.writer.put(run_id, None, events)

    async def ended(self, record: RunRecord) -> None:
        """The run's final record: returns once committed (or after ``END_WAIT_S``)."""
        await self._committed(record.run_id, record)

    async def written(self, run_id: str) -> None:
        """Returns once what was handed over of the run is committed (or after
        ``END_WAIT_S``): a run started for a caller who may ask another replica next."""
        await self._committed(run_id, None)

    async def _committed(self, run_id: str, record: RunRecord | None) -> None:
        committed = self.writer.put(run_id, record, wait=True)
        assert committed is not None
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(committed)), END_WAIT_S)
        except (TimeoutError, StateUnavailableError):
            log.warning("%s: run %s is written to the state database when it answers",
                        self.agent, run_id)  # fmt: skip

    def close(self) -> None:
        self.writer.close()

    # ------------------------------------------------------------- reading

    async def get(self, run_id: str) -> RunRecord | None:
        return await asyncio.to_thread(self._get, run_id)

    async def query(self, where: RunFilter, page_size: int = 0, page_token: str = ""
                    ) -> tuple[list[RunRecord], str]:  # fmt: skip
        """Newest first, across every replica; the token of the next page ("" on the last)."""
        size = page_size_of(page_size)
        below = run_page_position(page_token) if page_token else None
        rows = await asyncio.to_thread(self._select, where, size + 1, below)
        page = [self.codec.record_from_bytes(body) for _, body in rows[:size]]
        token = run_page_token(page_sequence=rows[size - 1][0]) if len(rows) > size else ""
        return page, token

    async def watch(self, run_id: str, start_index: int = 0
                    ) -> AsyncIterator[list[tuple[int, E]]]:  # fmt: skip
        """The run's events from ``start_index``, then as the replica holding it writes them,
        until it is over (see the module docstring)."""
        if start_index < 0:
            raise InvalidRequestError("start_index must be >= 0")
        woken = asyncio.Event()
        key = (asyncio.get_running_loop(), woken)
        with self._lock:
            self._watchers.setdefault(run_id, set()).add(key)
        try:
            index = start_index
            while True:
                record, rows = await asyncio.to_thread(self._events, run_id, index)
                if rows:
                    index = rows[-1][0] + 1
                    yield [(i, self.codec.event_from_bytes(body)) for i, body in rows]
                    continue
                if record is None and index == start_index:
                    raise NotFoundError(f"no run {run_id!r} is kept (unknown, or forgotten)")
                if record is None or record.status.is_over:
                    return
                woken.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), POLL_S)
        finally:
            with self._lock:
                self._watchers[run_id].discard(key)
                if not self._watchers[run_id]:
                    del self._watchers[run_id]

    async def cancel(self, run_id: str) -> None:
        """Ask the replica holding the run to cancel it."""

        def send() -> None:
            with self.database.transaction() as db:
                notify(db, CANCEL_CHANNEL, runs_message(self.agent, run_id))

        await asyncio.to_thread(send)

    # ------------------------------------------------------------ internals

    def _get(self, run_id: str) -> RunRecord | None:
        row = self.database.fetch_one(
            "SELECT record FROM mesh_runs WHERE agent = %s AND run_id = %s", (self.agent, run_id)
        )
        return None if row is None else self.codec.record_from_bytes(row[0])

    def _select(self, where: RunFilter, limit: int, below: int | None
                ) -> list[tuple[int, bytes]]:  # fmt: skip
        clauses: list[str] = ["agent = %s"]
        args: list[Any] = [self.agent]
        if where.statuses:
            clauses.append("status = ANY(%s)")
            args.append(sorted(s.value for s in where.statuses))
        if where.created_after is not None:
            clauses.append("created >= %s")
            args.append(where.created_after)
        if where.created_before is not None:
            clauses.append("created < %s")
            args.append(where.created_before)
        if where.session_id:
            clauses.append("session_id = %s")
            args.append(where.session_id)
        if below is not None:
            clauses.append("sequence < %s")
            args.append(below)
        query = (f"SELECT sequence, record FROM mesh_runs WHERE {' AND '.join(clauses)}"
                 " ORDER BY sequence DESC LIMIT %s")  # fmt: skip
        return self.database.fetch_all(query.encode(), (*args, limit))

    def _events(self, run_id: str, index: int
                ) -> tuple[RunRecord | None, list[tuple[int, bytes]]]:  # fmt: skip
        """The record, read first: if it says the run is over, the events read after it are
        all there are (a run's end is committed with, or after, its last events)."""
        record = self._get(run_id)
        rows = self.database.fetch_all(
            "SELECT index, body FROM mesh_run_events WHERE agent = %s AND run_id = %s"
            " AND index >= %s ORDER BY index LIMIT %s",
            (self.agent, run_id, index, EVENTS_PER_READ),
        )
        return record, rows

    def _on_written(self, payload: str) -> None:
        agent, _, run_id = payload.partition(" ")
        if agent != self.agent:
            return
        with self._lock:
            watchers = list(self._watchers.get(run_id, ()))
        _wake(watchers)

    def _wake_every_watcher(self) -> None:
        with self._lock:
            watchers = [w for ws in self._watchers.values() for w in ws]
        _wake(watchers)

    def _on_cancel(self, payload: str) -> None:
        agent, _, run_id = payload.partition(" ")
        if agent == self.agent:
            self._cancel_here(run_id)


def _wake(watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
    for loop, woken in watchers:
        with suppress(RuntimeError):  # its loop has closed: the watch is over
            loop.call_soon_threadsafe(woken.set)
