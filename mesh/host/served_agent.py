"""``ServedAgent``: one agent as a service keeps it, below any wire format.

It owns what serving an agent involves: the runs going on (a slot each, for
Cancel and the concurrency limit), the record and event log of every run
(``RunStore``), the run ledger (callers' run ids as idempotency keys), the
conversations (``SessionStore``), the audit sink, and the bridge from the
agent's threads to the service's event loop. The RPC layer adapts requests
to it and its answers to the wire; it never sees a protobuf message (a
``WireCodec`` given by that layer turns events into what the store keeps).

A run is launched the same way whoever asked: it gets a record (queued,
then running, then how it ended), its events go to the audit log and the
run's log, and it runs on its own thread until it ends, whether or not
anyone is still listening. A caller that owns the run (Run, RunStream)
cancels it when it goes away; one started with StartRun lives on.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
)
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from mesh.agents.base import MultiStepAgent, RunResult
from mesh.agents.budget import Budget
from mesh.agents.context import RunContext
from mesh.agents.conversation import Turn
from mesh.agents.events import AgentEvent
from mesh.agents.tool_runner import call_directly
from mesh.agents.user_input import InputChannel
from mesh.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    ErrorInfo,
    InvalidRequestError,
    NotFoundError,
    RunCancelledError,
    StateUnavailableError,
)
from mesh.host.audit import AuditLog
from mesh.host.run_ledger import Ledger, describe_error
from mesh.host.run_record import RunFilter, RunRecord, RunStatus
from mesh.host.run_store import Keep, RunStore
from mesh.host.runs import ActiveRuns
from mesh.host.sessions import Sessions
from mesh.models.images import Image
from mesh.text import clip
from mesh.tools.base import Tool
from mesh.tools.final_answer import FINAL_ANSWER

if TYPE_CHECKING:  # only with shared state: its driver is not loaded otherwise
    from mesh.host.shared_runs import SharedRuns

__all__ = ["Launched", "RunOrder", "ServedAgent", "WireCodec"]

log = logging.getLogger(__name__)

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)
T = TypeVar("T")
MAX_TASK_CHARS = 100_000
SHARED_RECORD_WAIT_S = 2.0
LEDGER_RETRY_S = 600.0


class WireCodec(Protocol[E_co]):
    """How the RPC layer wants events kept, and a unary run's response recorded."""

    def event(self, event: AgentEvent) -> tuple[E_co, int, Keep]:
        """The event as kept, its size in bytes, and how long it is kept (see ``RunStore``)."""
        ...

    def response(self, result: RunResult) -> bytes:
        """A unary run's response, for the ledger to answer a retry with."""
        ...


@dataclass(frozen=True)
class RunOrder:
    """What a caller asks for; ids are already checked as identifiers."""

    task: str
    max_steps: int | None = None
    run_id: str = ""
    """The caller's id, an idempotency key; empty: the service makes one up."""
    parent_run_id: str = ""
    session_id: str = ""
    budget: Budget | None = None
    deadline: float | None = None
    """time.monotonic() after which the run stops."""
    additional_args: dict[str, Any] = field(default_factory=dict)
    """Checked JSON values beside the task (``mesh.agents.run_args``)."""
    images: tuple[Image, ...] = ()
    """Checked images the model sees with the task (``mesh.models.images``)."""
    accepts_input: bool = False
    """The caller can answer the run's questions (``user_input``): see ``answer``."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The caller's request metadata, checked and bounded (``RunContext.metadata``)."""


@dataclass
class Launched:
    """A run just started: its record, its context and its outcome to come."""

    record: RunRecord
    context: RunContext
    outcome: asyncio.Future[RunResult]

    def cancel_unless_over(self) -> None:
        if not self.outcome.done():
            self.context.cancel()


class ServedAgent(Generic[E]):
    def __init__(
        self,
        agent: MultiStepAgent,
        codec: WireCodec[E],
        *,
        max_concurrent_runs: int = 16,
        audit: AuditLog | None = None,
        ledger: Ledger | None = None,
        store: RunStore[E] | None = None,
        sessions: Sessions | None = None,
        shared: SharedRuns[E] | None = None,
    ) -> None:
        self.agent = agent
        self.codec = codec
        self.audit = audit
        self.ledger = ledger
        self.store: RunStore[E] = store if store is not None else RunStore()
        self.sessions = sessions
        self.shared = shared
        """With shared state: the runs of every replica of this agent (see ``shared_runs``)."""
        self.runs = ActiveRuns(max_concurrent_runs)
        if shared is not None:
            shared.on_cancel(self.runs.cancel)
        self._threads = ThreadPoolExecutor(
            max_workers=max_concurrent_runs + 4, thread_name_prefix=f"{agent.name}-run"
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting: dict[str, asyncio.Future[RunRecord]] = {}
        """StartRun calls under way, by run id: a concurrent one with the same id joins."""

    @property
    def name(self) -> str:
        return self.agent.name

    # ------------------------------------------------------------------ runs

    async def start(self, order: RunOrder) -> tuple[RunRecord, bool]:
        """Start a run that lives on without its caller; the record, and whether the
        caller's run id had started it before (then it is that run, whatever its state)."""
        if order.run_id in self._starting:  # the same id, being started by a concurrent call
            joined = await asyncio.shield(self._starting[order.run_id])
            if joined.task != order.task:
                raise AlreadyExistsError(f"run id {order.run_id!r} was used for another "
                                         "task; use a new run id")  # fmt: skip
            return joined, True
        if (known := await self._started_before(order)) is not None:
            return known, True
        starting = asyncio.get_running_loop().create_future()
        starting.add_done_callback(_retrieved)
        if order.run_id:
            self._starting[order.run_id] = starting
        try:
            launched = await self.launch(order)
            if self.shared is not None:  # its caller may ask any replica about it next
                await self.shared.written(launched.record.run_id)
            starting.set_result(launched.record)
        except AlreadyExistsError as err:  # another replica started it (shared state)?
            if (known := await self._started_elsewhere(order)) is None:
                starting.set_exception(err)
                raise
            starting.set_result(known)
            return known, True
        except BaseException as err:
            starting.set_exception(err)
            raise
        finally:
            self._starting.pop(order.run_id, None)
        return launched.record, False

    async def _started_elsewhere(self, order: RunOrder) -> RunRecord | None:
        """The run another replica started with ``order``'s run id: its record reaches the
        shared database a moment after its id reached the ledger, so wait that moment."""
        if self.shared is None or not order.run_id:
            return None
        deadline = time.monotonic() + SHARED_RECORD_WAIT_S
        while (known := await self._started_before(order)) is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return known

    async def _started_before(self, order: RunOrder) -> RunRecord | None:
        """The run ``order``'s run id started, if this service (or, with shared state, any
        replica) keeps it."""
        known = self.store.find(order.run_id) if order.run_id else None
        if known is None and order.run_id and self.shared is not None:
            known = await self.shared.get(order.run_id)
        if known is not None and known.task != order.task:
            raise AlreadyExistsError(f"run id {order.run_id!r} was used for another task; "
                                     "use a new run id")  # fmt: skip
        return known

    async def run(self, order: RunOrder) -> RunResult | bytes:
        """A run owned by the caller: cancelled if the caller stops waiting. The recorded
        response instead, for a retry of a finished unary run (see ``run_ledger``)."""
        launched = await self._launch(order, unary=True)
        if isinstance(launched, bytes):
            return launched
        try:
            return await asyncio.shield(launched.outcome)
        finally:
            launched.cancel_unless_over()

    async def launch(self, order: RunOrder) -> Launched:
        """Start a run (a caller's run id is claimed in the ledger first: AlreadyExistsError
        if it ran before)."""
        launched = await self._launch(order, unary=False)
        assert isinstance(launched, Launched)  # only a unary retry is answered from the ledger
        return launched

    async def _launch(self, order: RunOrder, *, unary: bool) -> Launched | bytes:
        self._check(order)
        ctx = RunContext(agent=self.name, remote_parent_id=order.parent_run_id or None,
                         deadline=order.deadline, budget=order.budget,
                         inputs=InputChannel() if order.accepts_input else None,
                         metadata=dict(order.metadata))  # fmt: skip
        if order.run_id:
            ctx.run_id = order.run_id
        async with AsyncExitStack() as undo:
            self.runs.add(ctx)
            undo.callback(self.runs.remove, ctx.run_id)
            if order.session_id and self.sessions is not None:
                claim = self.sessions.claim(order.session_id, run_id=ctx.run_id)
                await undo.enter_async_context(_off_loop(claim))
            if order.run_id and self.ledger is not None:
                recorded = await asyncio.to_thread(self.ledger.start, order.run_id, order.task,
                                                   unary=unary)  # fmt: skip
                if recorded is not None:
                    return recorded  # a retry: it is not run again
            record = self.store.create(RunRecord(
                run_id=ctx.run_id, agent=self.name, task=order.task,
                session_id=order.session_id, parent_run_id=order.parent_run_id))  # fmt: skip
            if self.shared is not None:
                self.shared.changed(record)
            cleanup = undo.pop_all()
        outcome: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        outcome.add_done_callback(_retrieved)  # nobody may be waiting (StartRun)
        task = asyncio.create_task(self._execute(order, ctx, outcome, cleanup, unary=unary))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Launched(record, ctx, outcome)

    async def cancel(self, run_id: str) -> tuple[bool, RunStatus]:
        """Cancel a run; whether it was still going, and its state. A run another replica
        holds (shared state) is asked to stop there: its end shows when it has."""
        record = self.store.find(run_id)
        if record is not None and record.status.is_over:
            return False, record.status  # its thread may still be unwinding: nothing to stop
        if self.runs.cancel(run_id):
            return True, record.status if record is not None else RunStatus.QUEUED
        if record is None and self.shared is not None:
            record = await self.shared.get(run_id)
            if record is not None and not record.status.is_over:
                await self.shared.cancel(run_id)
                return True, record.status
        if record is None:
            raise NotFoundError(f"no run {clip(run_id, 40)!r} is kept here (unknown, or "
                                "forgotten)")  # fmt: skip
        return False, record.status

    async def get_run(self, run_id: str) -> RunRecord:
        """The run's record, whichever replica holds it (shared state)."""
        if (record := self.store.find(run_id)) is None and self.shared is not None:
            record = await self.shared.get(run_id)
        return record if record is not None else self.store.get(run_id)  # NotFoundError

    async def list_runs(self, where: RunFilter, page_size: int, page_token: str
                        ) -> tuple[list[RunRecord], str]:  # fmt: skip
        """Newest first: this service's runs, or every replica's (shared state)."""
        if self.shared is not None:
            return await self.shared.query(where, page_size, page_token)
        return self.store.query(where, page_size, page_token)

    def watch_run(self, run_id: str, start_index: int = 0
                  ) -> AsyncIterator[list[tuple[int, E]]]:  # fmt: skip
        """The run's events, kept and live: from this service, or from the replica that
        holds the run (shared state)."""
        if self.shared is not None and self.store.find(run_id) is None:
            return self.shared.watch(run_id, start_index)
        return self.store.watch(run_id, start_index)

    def question(self, run_id: str) -> str | None:
        """The question the run waits to have answered, if it is running here and waits."""
        ctx = self.runs.get(run_id)
        return ctx.inputs.question if ctx is not None and ctx.inputs is not None else None

    def answer(self, run_id: str, text: str, metadata: Mapping[str, str] | None = None) -> None:
        """Answer the run's question (InvalidRequestError if it asks none, NotFoundError if it
        is not running here)."""
        ctx = self.runs.get(run_id)
        if ctx is None:
            raise NotFoundError(f"no run {clip(run_id, 40)!r} is running here")
        if ctx.inputs is None:
            raise InvalidRequestError("the run is not waiting for input")
        ctx.inputs.answer(text, metadata)

    def shutdown(self) -> None:
        """Cancel every run still going (their jails die with them)."""
        self.runs.cancel_all()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ----------------------------------------------------------------- tools

    def tools(self) -> dict[str, Tool]:
        return {name: t for name, t in self.agent.tools.items() if name != FINAL_ANSWER}

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], deadline: float | None
    ) -> Any:
        """One tool call from outside any run, audited and traced like a step's."""
        tools = self.tools()
        if name not in tools:
            raise NotFoundError(f"{self.name} has no tool {clip(name, 80)!r} "
                                f"(it has {', '.join(tools)})")  # fmt: skip
        ctx = RunContext(agent=self.name, deadline=deadline)
        ctx.run_id = f"call-{ctx.run_id}"
        ctx.sink = self._audit
        record = await self._in_thread(ctx, lambda: call_directly(ctx, tools, name, arguments))
        if record.exception is not None:
            raise record.exception
        return record.result

    # -------------------------------------------------------------- internals

    def _check(self, order: RunOrder) -> None:
        if not order.task.strip():
            raise InvalidRequestError("task must be a non-empty string")
        if len(order.task) > MAX_TASK_CHARS:
            raise InvalidRequestError(f"task is longer than {MAX_TASK_CHARS} characters")
        if order.max_steps is not None and order.max_steps < 0:
            raise InvalidRequestError("max_steps must be >= 0")

    async def _execute(
        self,
        order: RunOrder,
        ctx: RunContext,
        outcome: asyncio.Future[RunResult],
        held: AsyncExitStack,
        *,
        unary: bool,
    ) -> None:
        """Run it to its end, then record how it ended everywhere it is kept. What the run
        held (its slot, its session) is let go before its record says it ended, so that a
        client that sees the end can start the next run, or the next turn, at once."""
        loop = asyncio.get_running_loop()
        result: RunResult | None = None
        error: BaseException | None = None
        async with held:
            try:
                history = await self._history(order)
                ctx.sink = self._sink(loop, ctx.run_id)

                def work() -> RunResult:
                    return self.agent.run(order.task, max_steps=order.max_steps,
                                          return_full_result=True, context=ctx,
                                          history=history,
                                          additional_args=order.additional_args,
                                          images=order.images)  # fmt: skip

                self.store.start(ctx.run_id)  # its thread is free: runs are fewer than threads
                if self.shared is not None:
                    self.shared.changed(self.store.get(ctx.run_id))
                result = await self._in_thread(ctx, work)
                await self._remember(order, ctx.run_id, result)
            except BaseException as err:  # recorded, then handed to the caller
                error = err
        ledger_entry: asyncio.Future[None] | None = None
        if order.run_id and self.ledger is not None:  # written while the record is
            response = self.codec.response(result) if result is not None and unary else None
            problem = describe_error(error) if error is not None else None
            ledger_entry = asyncio.ensure_future(self._finish_in_ledger(
                self.ledger, order.run_id, error=problem, response=response))  # fmt: skip
        await self._record_end(ctx.run_id, result, error)
        if not unary:  # a streamed run's caller need not wait for the ledger
            _settle(outcome, result, error)
        if ledger_entry is not None:
            await _unstoppable(ledger_entry)
        if unary:  # a retry after the answer must find it recorded
            _settle(outcome, result, error)
        if error is not None and not isinstance(error, Exception):
            raise error

    async def _finish_in_ledger(self, ledger: Ledger, run_id: str, *, error: str | None,
                                response: bytes | None) -> None:  # fmt: skip
        """The run's entry, finished. If the shared database is away, the run's caller still
        gets its answer, and the entry is finished when the database is back (until then a
        retry of the id is refused, as for any run not known to have finished)."""
        finish = functools.partial(ledger.finish, run_id, error=error, response=response)
        try:
            await asyncio.to_thread(finish)
        except StateUnavailableError as err:
            log.warning("%s: run %s ended; its ledger entry waits for the state database (%s)",
                        self.name, run_id, err.message)  # fmt: skip
            task = asyncio.ensure_future(_retry_until_written(finish))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _history(self, order: RunOrder) -> list[Turn]:
        if not order.session_id or self.sessions is None:
            return []
        return await asyncio.to_thread(self.sessions.load, order.session_id)

    async def _remember(self, order: RunOrder, run_id: str, result: RunResult) -> None:
        """The run's turn, into its session (kept even if the caller stops waiting)."""
        if result.turn is not None and order.session_id and self.sessions is not None:
            append = self.sessions.append
            await _unstoppable(asyncio.to_thread(append, order.session_id, run_id, result.turn))

    async def _record_end(
        self, run_id: str, result: RunResult | None, error: BaseException | None
    ) -> None:
        """The run's outcome into its record: in the shared database first (committed), so
        that whichever replica a client asks next knows the run ended."""
        outcome = _outcome(result, error)
        try:
            if self.shared is not None:
                outcome["ended"] = time.time()
                await _unstoppable(self.shared.ended(replace(self.store.get(run_id), **outcome)))
        finally:  # the service may be stopping: the run still ends here
            self.store.finish(run_id, **outcome)

    def _sink(self, loop: asyncio.AbstractEventLoop, run_id: str) -> Callable[[AgentEvent], None]:
        """Each event to the audit log (in the run's thread), and into the run's log on
        the loop, converted by the codec before it crosses (off the loop). Events that come
        while the loop is busy cross together: one wake-up of the loop, one write."""
        outbox: list[tuple[E, int, Keep]] = []
        lock = threading.Lock()

        def deliver() -> None:
            with lock:
                items = outbox[:]
                outbox.clear()
            kept = self.store.extend(run_id, items)
            if self.shared is not None:
                self.shared.added(run_id, kept)

        def sink(event: AgentEvent) -> None:
            self._audit(event)
            item = self.codec.event(event)
            with lock:
                outbox.append(item)
                first = len(outbox) == 1
            if first:
                loop.call_soon_threadsafe(deliver)

        return sink

    def _audit(self, event: AgentEvent) -> None:
        if self.audit is not None:
            self.audit.record(event)

    async def _in_thread(self, ctx: RunContext, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            # The run's spans belong under the call's server span: carry the context across.
            return await loop.run_in_executor(self._threads, contextvars.copy_context().run, work)
        finally:
            ctx.cancel()  # no-op once the run is over; stops it if its owner went away


async def _retry_until_written(write: Callable[[], None]) -> None:
    """Retry a write refused because the state database was away, for up to
    ``LEDGER_RETRY_S``, backing off."""
    delay, deadline = 0.5, time.monotonic() + LEDGER_RETRY_S
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(write)
            return
        except StateUnavailableError:
            delay = min(delay * 2, 10.0)
    log.error("a ledger entry was not written: the state database stayed away for %.0f s",
              LEDGER_RETRY_S)  # fmt: skip


def _outcome(result: RunResult | None, error: BaseException | None) -> dict[str, Any]:
    """How the run ended, as the fields of its record."""
    if result is not None:
        status = RunStatus.SUCCEEDED if result.state == "success" else RunStatus.MAX_STEPS
        return {"status": status, "answer": result.output, "steps": len(result.steps),
                "usage": result.usage, "usage_by_agent": result.usage_by_agent}  # fmt: skip
    assert error is not None
    if isinstance(error, Exception):
        info = ErrorInfo.of(error)
    else:  # the service is stopping
        info = ErrorInfo("run_cancelled", "the service stopped the run")
    stopped = isinstance(error, RunCancelledError | DeadlineExceededError
                         | asyncio.CancelledError)  # fmt: skip
    return {"status": RunStatus.CANCELLED if stopped else RunStatus.FAILED, "error": info}


async def _unstoppable(write: Any) -> None:
    """A record's write runs to its end even if the task awaiting it is cancelled."""
    await asyncio.shield(write)


def _off_loop(blocking: AbstractContextManager[T]) -> AbstractAsyncContextManager[T]:
    """A context manager that waits for the disk (SQLite), entered and left off the loop."""

    @asynccontextmanager
    async def entered() -> AsyncIterator[T]:
        value = await asyncio.to_thread(blocking.__enter__)
        try:
            yield value
        except BaseException as err:
            if not await asyncio.to_thread(blocking.__exit__, type(err), err, err.__traceback__):
                raise
        else:
            await asyncio.to_thread(blocking.__exit__, None, None, None)

    return entered()


def _settle(
    outcome: asyncio.Future[RunResult], result: RunResult | None, error: BaseException | None
) -> None:
    if result is not None:
        outcome.set_result(result)
    else:
        assert error is not None
        outcome.set_exception(error)


def _retrieved(outcome: asyncio.Future[Any]) -> None:
    if not outcome.cancelled():
        outcome.exception()  # else asyncio logs "exception was never retrieved"
