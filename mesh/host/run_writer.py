"""``RunWriter``: a replica's run records and events, written to the shared database behind
the event loop.

The loop hands over what changed (a record as it now is, events as they are
kept) and never waits for the database, except at a run's end, when it waits
(briefly) for the run to be committed, so that whichever replica a client asks
next finds it ended. One thread writes: everything waiting goes in one
transaction (group commit), which also notifies the other replicas
(``mesh_runs``) of each run it touched, so that their watchers read on.

If the database is away, what waits is kept and written when it is back;
what waits is bounded (``max_pending_bytes``): beyond it new events are not
kept (the record says so, as ``events_truncated``), while records always are.
What the agent's runs take in the database is bounded the way one service's
memory is (``RunStore``): finished runs are forgotten ``retention_s`` after
they end, and the oldest finished runs whenever the agent's rows pass
``max_bytes``. A heartbeat per replica lets the others tell a run whose
replica died (it failed) from one still going.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from mesh.errors import ErrorInfo, StateUnavailableError
from mesh.host.run_record import RunRecord, RunStatus
from mesh.state.database import Database
from mesh.state.notifications import notify

__all__ = ["RUNS_CHANNEL", "RunBytes", "RunWriter", "runs_message"]

log = logging.getLogger(__name__)

E = TypeVar("E")
RUNS_CHANNEL = "mesh_runs"
HEARTBEAT_S = 2.0
STALE_AFTER_S = 15.0
"""A replica silent this long has stopped: its runs still going are failed."""
MAINTENANCE_S = 10.0
LINGER_S = 0.05
"""What comes within this of the first change waiting goes in the same transaction (a short
run's record and events in one), unless someone waits for a commit: watchers on other
replicas see a run's events this much later at most."""
RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0)


class RunBytes(Protocol[E]):
    """How records and events are kept in the database: the bytes of their wire messages."""

    def record_bytes(self, record: RunRecord) -> bytes: ...

    def record_from_bytes(self, data: bytes) -> RunRecord: ...

    def event_bytes(self, event: E) -> bytes: ...

    def event_from_bytes(self, data: bytes) -> E: ...


def runs_message(agent: str, run_id: str) -> str:
    """A ``mesh_runs`` payload: ids are identifiers (no spaces), so a space parts them."""
    return f"{agent} {run_id}"


@dataclass
class _Pending(Generic[E]):
    record: RunRecord | None = None
    events: list[tuple[int, E]] = field(default_factory=list)
    event_bytes: int = 0
    committed: list[Future[None]] = field(default_factory=list)

    def then(self, newer: _Pending[E]) -> _Pending[E]:
        """This (older, not written) followed by ``newer``."""
        return _Pending(newer.record or self.record, self.events + newer.events,
                        self.event_bytes + newer.event_bytes,
                        self.committed + newer.committed)  # fmt: skip


class RunWriter(Generic[E]):
    def __init__(self, database: Database, agent: str, replica: str, codec: RunBytes[E], *,
                 retention_s: float, max_bytes: int) -> None:  # fmt: skip
        self.database = database
        self.agent = agent
        self.replica = replica
        self.codec = codec
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.max_pending_bytes = max(1 << 20, max_bytes // 4)
        self._pending: dict[str, _Pending[E]] = {}
        self._pending_bytes = 0
        self._truncated: set[str] = set()
        """Runs going some of whose events were not kept: their record says so."""
        self._record_sizes: dict[str, int] = {}
        """Runs going: the size of their record as last committed (for the byte count)."""
        self._wake = threading.Condition()
        self._waited = 0
        """Commits waited for among what is pending: then nothing lingers."""
        self._closing = False
        self._thread = threading.Thread(target=self._write_forever, name=f"{agent}-run-writer",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def put(self, run_id: str, record: RunRecord | None = None,
            events: Sequence[tuple[int, E, int]] = (), *, wait: bool = False
            ) -> Future[None] | None:  # fmt: skip
        """Queue the run's record as it now is and/or its new events ``(index, event, size)``;
        with ``wait``, a future done once they are committed."""
        done: Future[None] | None = Future() if wait else None
        with self._wake:
            pending = self._pending.setdefault(run_id, _Pending())
            for index, event, size in events:
                if self._pending_bytes + size > self.max_pending_bytes:
                    self._truncated.add(run_id)  # the database is away, or slower than the runs
                    continue
                pending.events.append((index, event))
                pending.event_bytes += size
                self._pending_bytes += size
            if record is not None:
                pending.record = record
            if done is not None:
                pending.committed.append(done)
                self._waited += 1
            self._wake.notify()
        return done

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what waits (for up to ``timeout_s``), then stop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout_s)

    # -------------------------------------------------------------- the thread

    def _write_forever(self) -> None:
        failures = 0
        beat = maintained = -HEARTBEAT_S - MAINTENANCE_S
        while True:
            beat, maintained = self._keep_up(beat, maintained)
            with self._wake:
                if not self._pending and not self._closing:
                    self._wake.wait(timeout=max(0.05, beat + HEARTBEAT_S - time.monotonic()))
                self._linger()
                batch, self._pending, self._pending_bytes = self._pending, {}, 0
                self._waited = 0
                closing = self._closing
            try:
                if batch:
                    self._write(batch)
                failures = 0
            except StateUnavailableError as err:
                self._requeue(batch)
                if failures == 0:
                    log.warning("%s: run records wait for the state database: %s", self.agent,
                                err.message)  # fmt: skip
                failures += 1
                if closing:
                    return  # nothing more can be written: the records of these runs are lost
                time.sleep(RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S)) - 1])
                continue
            except Exception:
                log.exception("%s: writing run records failed; they are dropped", self.agent)
                _settle(batch, StateUnavailableError("run records not written"))
                continue
            _settle(batch, None)
            if closing and not self._pending:
                return

    def _linger(self) -> None:
        """Let more changes join the batch for up to ``LINGER_S``. Holds the condition."""
        until = time.monotonic() + LINGER_S
        while self._pending and not self._waited and not self._closing:
            left = until - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(left)

    def _keep_up(self, beat: float, maintained: float) -> tuple[float, float]:
        """The heartbeat and the maintenance, when due; when they were last done."""
        now = time.monotonic()
        try:
            if now - beat >= HEARTBEAT_S:
                self._heartbeat()
                beat = now
            if now - maintained >= MAINTENANCE_S:
                self._maintain()
                maintained = now
        except StateUnavailableError:
            pass  # said when a write fails; retried at the next turn
        return beat, maintained

    def _requeue(self, batch: dict[str, _Pending[E]]) -> None:
        with self._wake:
            newer, self._pending = self._pending, {}
            for run_id in {**batch, **newer}:
                older, recent = batch.get(run_id), newer.get(run_id)
                if older is not None and recent is not None:
                    self._pending[run_id] = older.then(recent)
                else:
                    self._pending[run_id] = older or recent  # type: ignore[assignment]
            self._pending_bytes = sum(p.event_bytes for p in self._pending.values())
            self._waited = sum(len(p.committed) for p in self._pending.values())

    def _write(self, batch: dict[str, _Pending[E]]) -> None:
        added = 0
        rows: list[tuple[str, str, int, bytes]] = []
        sizes: dict[str, int] = {}
        with self.database.transaction() as db, db.pipeline():  # one round trip, not many
            for run_id, pending in batch.items():
                events = [(self.agent, run_id, i, self.codec.event_bytes(e))
                          for i, e in pending.events]  # fmt: skip
                rows += events
                grown = sum(len(body) for *_, body in events)
                if pending.record is not None:
                    body = self.codec.record_bytes(self._as_kept(pending.record))
                    sizes[run_id] = len(body)
                    grown += len(body) - self._record_sizes.get(run_id, 0)
                    self._upsert(db, pending.record, body, grown)
                elif grown:
                    db.execute("UPDATE mesh_runs SET bytes = bytes + %s WHERE agent = %s AND"
                               " run_id = %s", (grown, self.agent, run_id))  # fmt: skip
                added += grown
                notify(db, RUNS_CHANNEL, runs_message(self.agent, run_id))
            if rows:  # one statement for the batch's events, however many
                db.execute(
                    "INSERT INTO mesh_run_events (agent, run_id, index, body)"
                    " SELECT %s, unnest(%s::text[]), unnest(%s::int[]), unnest(%s::bytea[])"
                    " ON CONFLICT DO NOTHING",
                    (self.agent, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
                )
            self._count(db, added)
        self._record_sizes.update(sizes)
        for run_id, pending in batch.items():
            if pending.record is not None and pending.record.status.is_over:
                self._record_sizes.pop(run_id, None)
                self._truncated.discard(run_id)

    def _as_kept(self, record: RunRecord) -> RunRecord:
        return (
            replace(record, events_truncated=True) if record.run_id in self._truncated else record
        )

    def _upsert(self, db: Connection, record: RunRecord, body: bytes, grown: int) -> None:
        db.execute(
            "INSERT INTO mesh_runs (agent, run_id, replica, status, created, ended, session_id,"
            " record, bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (agent, run_id) DO UPDATE SET status = excluded.status,"
            " ended = excluded.ended, record = excluded.record,"
            " bytes = mesh_runs.bytes + %s",
            (self.agent, record.run_id, self.replica, record.status.value, record.created,
             record.ended, record.session_id, body, grown, grown),
        )  # fmt: skip

    def _count(self, db: Connection, added: int) -> None:
        """Add to the agent's byte count; past ``max_bytes``, forget the oldest finished runs
        down to three quarters of it."""
        row = db.execute(
            "INSERT INTO mesh_run_usage (agent, bytes) VALUES (%s, %s) ON CONFLICT (agent)"
            " DO UPDATE SET bytes = mesh_run_usage.bytes + excluded.bytes RETURNING bytes",
            (self.agent, added),
        ).fetchone()
        used = int(row[0]) if row else 0
        while used > self.max_bytes:
            freed = self._forget(db, "ORDER BY ended LIMIT 16")
            if not freed:
                return  # only runs still going: never forgotten
            used -= freed
            if used <= self.max_bytes * 3 // 4:
                return

    def _forget(self, db: Connection, which: str, *args: object) -> int:
        """Delete finished runs (``which`` orders and limits them); the bytes freed."""
        gone = db.execute(
            "DELETE FROM mesh_runs WHERE agent = %s AND run_id IN (SELECT run_id FROM mesh_runs"
            f" WHERE agent = %s AND ended IS NOT NULL {which}) RETURNING run_id, bytes",
            (self.agent, self.agent, *args),
        ).fetchall()
        if not gone:
            return 0
        db.execute("DELETE FROM mesh_run_events WHERE agent = %s AND run_id = ANY(%s)",
                   (self.agent, [run_id for run_id, _ in gone]))  # fmt: skip
        freed = sum(int(size) for _, size in gone)
        db.execute("UPDATE mesh_run_usage SET bytes = bytes - %s WHERE agent = %s",
                   (freed, self.agent))  # fmt: skip
        return freed

    def _heartbeat(self) -> None:
        with self.database.transaction() as db:
            db.execute(
                f"INSERT INTO mesh_replicas (replica, agent, seen) VALUES (%s, %s, {_NOW})"
                " ON CONFLICT (replica) DO UPDATE SET seen = excluded.seen",
                (self.replica, self.agent),
            )

    def _maintain(self) -> None:
        """Forget runs past their retention; end the runs of replicas that stopped (the
        database's clock judges, so that the replicas' clocks need not agree)."""
        with self.database.transaction() as db:
            while self._forget(db, "AND ended < %s LIMIT 64", time.time() - self.retention_s):
                pass
            stale = db.execute(
                f"SELECT r.run_id, r.record, {_NOW} - p.seen FROM mesh_runs r LEFT JOIN"
                " mesh_replicas p ON p.replica = r.replica WHERE r.agent = %s"
                " AND r.ended IS NULL AND r.replica <> %s"
                f" AND (p.seen IS NULL OR p.seen < {_NOW} - %s) LIMIT 64",
                (self.agent, self.replica, STALE_AFTER_S),
            ).fetchall()
            for run_id, body, silent_s in stale:
                record = _failed(self.codec.record_from_bytes(body), silent_s)
                db.execute(
                    "UPDATE mesh_runs SET status = %s, ended = %s, record = %s"
                    " WHERE agent = %s AND run_id = %s AND ended IS NULL",
                    (record.status.value, record.ended, self.codec.record_bytes(record),
                     self.agent, run_id),
                )  # fmt: skip
                notify(db, RUNS_CHANNEL, runs_message(self.agent, run_id))
            db.execute(f"DELETE FROM mesh_replicas WHERE seen < {_NOW} - 86400")


Connection = psycopg.Connection[tuple[Any, ...]]
_NOW = "extract(epoch from clock_timestamp())"


def _failed(record: RunRecord, silent_s: float | None) -> RunRecord:
    since = "never" if silent_s is None else f"{silent_s:.0f} s ago"
    error = ErrorInfo("agent_unavailable", f"the replica running it stopped (last heard from "
                      f"{since}); the run did not finish", retryable=True)  # fmt: skip
    return replace(record, status=RunStatus.FAILED, ended=time.time(), error=error)


def _settle(batch: dict[str, _Pending[E]], error: BaseException | None) -> None:
    for pending in batch.values():
        for future in pending.committed:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
