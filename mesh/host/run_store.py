"""The runs a service keeps: their records and event logs, found by id and watched.

Every run a service serves (Run, RunStream or StartRun) gets a record and an
event log here, so that a client can look it up, list it, and watch it (a
replay of the log, then its live events) long after the stream that started
it has gone. Any number of watchers may follow one run.

It lives in memory, on the service's event loop (one thread: no locks), and
is bounded two ways: finished runs are forgotten ``retention_s`` after they
end, and the oldest finished runs are forgotten whenever everything kept
passes ``max_bytes``. A run still going is never forgotten; one run's log
stops keeping bulky events (model outputs, code, observations) once it passes
``max_run_bytes`` — its structural events (runs and tool calls starting and
ending, the answer) are always kept, so a replay still pairs every start with
its end — and says so (``events_truncated``). Live events (the pieces of a
model answer as it streams) go to the watchers of the moment and are then let
go: the run's next event, which holds the whole answer, takes their place.

The items are opaque to the store (the RPC layer keeps wire messages, so a
watcher's replay is not converted again); the caller gives their sizes.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, TypeVar

from mesh.errors import AlreadyExistsError, InvalidRequestError, NotFoundError
from mesh.host.run_record import RunFilter, RunRecord, RunStatus

__all__ = [
    "DEFAULT_RUN_MEMORY_BYTES",
    "DEFAULT_RUN_RETENTION_S",
    "Keep",
    "RunStore",
    "page_size_of",
    "run_page_position",
    "run_page_token",
]

E = TypeVar("E")
Keep = Literal["always", "bounded", "live"]
"""How long an event is kept: for the run's life (structural events), while the run's
share allows (bulky ones), or until the run's next event that is not live."""
DEFAULT_RUN_RETENTION_S = 24 * 3600.0
DEFAULT_RUN_MEMORY_BYTES = 64 * 1024 * 1024
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
RECORD_BYTES = 1024
"""What a record costs beside its task and events (ids, times, usage), roughly."""


@dataclass
class _Run(Generic[E]):
    record: RunRecord
    events: list[E | None] = field(default_factory=list)
    """By index; None for an event not kept. Items are never None themselves."""
    event_bytes: int = 0
    live: list[tuple[int, int]] = field(default_factory=list)
    """Index and size of the live events at the end of the log, let go at the next event."""
    sequence: int = 0
    """Creation order: ListRuns pages by it."""
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return RECORD_BYTES + len(self.record.task) + self.event_bytes

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


class RunStore(Generic[E]):
    def __init__(
        self,
        *,
        retention_s: float = DEFAULT_RUN_RETENTION_S,
        max_bytes: int = DEFAULT_RUN_MEMORY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.max_run_bytes = max_bytes // 4
        self._clock = clock
        self._runs: OrderedDict[str, _Run[E]] = OrderedDict()  # oldest first
        self._ended: OrderedDict[str, float] = OrderedDict()  # finished runs, first ended first
        self._bytes = 0
        self._sequence = 0

    # ------------------------------------------------------------- writing

    def create(self, record: RunRecord) -> RunRecord:
        """Keep a new run (queued); its id must not be kept already."""
        self._forget_expired()
        if record.run_id in self._runs:
            raise AlreadyExistsError(f"run id {record.run_id!r} is taken: use a new run id")
        self._sequence += 1
        record.created = record.created or self._clock()
        run: _Run[E] = _Run(record=record, sequence=self._sequence)
        self._runs[record.run_id] = run
        self._bytes += run.size
        self._keep_within_budget()
        return replace(record)

    def start(self, run_id: str) -> None:
        record = self._run(run_id).record
        record.status, record.started = RunStatus.RUNNING, self._clock()

    def append(self, run_id: str, event: E, *, size: int, keep: Keep) -> None:
        """Add the run's next event, kept as ``keep`` says (see the module docstring)."""
        self.extend(run_id, [(event, size, keep)])

    def extend(self, run_id: str, items: Sequence[tuple[E, int, Keep]]
               ) -> list[tuple[int, E, int]]:  # fmt: skip
        """Add the run's next events, each with its size and how long it is kept: its
        watchers wake once, and send them on together. Those kept for good (not live
        ones), with their indexes."""
        run = self._run(run_id)
        kept = []
        for event, size, keep in items:
            if self._add(run, event, size, keep) and keep != "live":
                kept.append((len(run.events) - 1, event, size))
        run.wake()
        return kept

    def _add(self, run: _Run[E], event: E, size: int, keep: Keep) -> bool:
        run.record.event_count += 1
        if keep != "live":
            self._let_go_of_live(run)
        if keep != "bounded" or run.event_bytes + size <= self.max_run_bytes:
            if keep == "live":
                run.live.append((len(run.events), size))
            run.events.append(event)
            run.event_bytes += size
            self._bytes += size
            return True
        run.events.append(None)
        run.record.events_truncated = True
        return False

    def _let_go_of_live(self, run: _Run[E]) -> None:
        """Forget the live events before this one: watchers that were there have them."""
        for index, size in run.live:
            run.events[index] = None
            run.event_bytes -= size
            self._bytes -= size
        run.live.clear()

    def finish(self, run_id: str, **outcome: object) -> None:
        """The run is over: set its outcome (status, answer, steps, usage, error...)."""
        run = self._run(run_id)
        ended = {"ended": self._clock(), **outcome}  # an outcome may say when it ended
        run.record = replace(run.record, **ended)  # type: ignore[arg-type]
        if not run.record.status.is_over:
            raise ValueError(f"finish needs a final status, got {run.record.status}")
        self._let_go_of_live(run)
        self._ended[run_id] = run.record.ended or 0.0
        run.wake()
        self._keep_within_budget()

    # ------------------------------------------------------------- reading

    def get(self, run_id: str) -> RunRecord:
        return replace(self._run(run_id).record)

    def kept(self, run_id: str) -> list[tuple[int, E]]:
        """The run's events kept so far, with their indexes (none for a run not kept)."""
        run = self._runs.get(run_id)
        if run is None:
            return []
        return [(index, event) for index, event in enumerate(run.events) if event is not None]

    def find(self, run_id: str) -> RunRecord | None:
        run = self._runs.get(run_id)
        return None if run is None else replace(run.record)

    def query(
        self, where: RunFilter | None = None, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[RunRecord], str]:
        """Newest first; the token of the next page ("" on the last)."""
        where = where or RunFilter()
        self._forget_expired()
        size = page_size_of(page_size)
        below = run_page_position(page_token) if page_token else None
        page: list[RunRecord] = []
        for run in reversed(self._runs.values()):
            if below is not None and run.sequence >= below:
                continue
            if not where.matches(run.record):
                continue
            if len(page) == size:
                return page, run_page_token(page_sequence=self._runs[page[-1].run_id].sequence)
            page.append(replace(run.record))
        return page, ""

    async def watch(self, run_id: str, start_index: int = 0) -> AsyncIterator[list[tuple[int, E]]]:
        """The run's events from ``start_index`` with their indexes: those kept so far, then
        the live ones as they come (in batches), until the run is over."""
        if start_index < 0:
            raise InvalidRequestError("start_index must be >= 0")
        run = self._run(run_id)
        index = start_index
        while True:
            batch = [(i, e) for i, e in enumerate(run.events[index:], index) if e is not None]
            index = max(index, len(run.events))
            if batch:
                yield batch
                continue  # more may have come while the batch was being sent
            if run.record.status.is_over and index >= run.record.event_count:
                return
            waiter = asyncio.get_running_loop().create_future()
            run.waiters.append(waiter)
            await waiter

    @property
    def bytes_kept(self) -> int:
        return self._bytes

    # ------------------------------------------------------------- bounds

    def _run(self, run_id: str) -> _Run[E]:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id!r} is kept here (unknown, or forgotten)")
        return run

    def _forget_expired(self) -> None:
        horizon = self._clock() - self.retention_s
        while self._ended and next(iter(self._ended.values())) < horizon:
            self._forget(next(iter(self._ended)))

    def _keep_within_budget(self) -> None:
        self._forget_expired()
        while self._bytes > self.max_bytes and self._ended:
            self._forget(next(iter(self._ended)))  # a running run is never forgotten

    def _forget(self, run_id: str) -> None:
        run = self._runs.pop(run_id)
        self._ended.pop(run_id, None)
        self._bytes -= run.size
        run.wake()


def page_size_of(asked: int) -> int:
    """The page size a ListRuns gets: the default for 0, at most ``MAX_PAGE_SIZE``."""
    if asked < 0:
        raise InvalidRequestError("page_size must be >= 0")
    return min(asked or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def run_page_token(page_sequence: int) -> str:
    return base64.urlsafe_b64encode(f"runs:{page_sequence}".encode()).decode()


def run_page_position(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token[:64].encode()).decode()
        prefix, number = text.split(":")
        if prefix != "runs" or not number.isdigit():
            raise ValueError(text)
    except ValueError as err:
        raise InvalidRequestError("page_token is not one this service gave") from err
    return int(number)
