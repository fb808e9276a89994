"""The context of one agent run: identity, its parent, events, cancellation.

A run started while another run is active in the same context (a managed
agent called from a manager's step) becomes that run's child: its events
flow into the parent's stream one level deeper, and cancelling the parent
cancels it, which fires the callbacks its resources registered (an executor
kills its jail). The active run travels in a ``ContextVar`` so that it follows
the call into tool code without every tool having to pass it along.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mesh.agents.budget import Budget
from mesh.agents.events import AgentEvent
from mesh.agents.usage import AgentUsage, merge_usage
from mesh.errors import DeadlineExceededError, RunCancelledError
from mesh.run_scope import current_scope

if TYPE_CHECKING:
    from mesh.agents.user_input import InputChannel

__all__ = ["RunContext", "active_run", "sharing_budget"]

EventSink = Callable[[AgentEvent], None]
E = TypeVar("E", bound=AgentEvent)


def active_run() -> RunContext | None:
    """The agent run this code runs in, if any (``run_scope.current_scope``, as agents know it)."""
    scope = current_scope.get()
    return scope if isinstance(scope, RunContext) else None


_budget_shares: contextvars.ContextVar[tuple[RunContext, int] | None] = contextvars.ContextVar(
    "mesh_budget_shares", default=None
)


def sharing_budget(run: RunContext, parts: int) -> None:
    """In this context, what ``run`` hands a delegated run is one of ``parts`` shares of what
    it has left: that many calls run at once (a fan-out), and together they must not spend
    more than the run has. Only ``run`` divides; the runs beneath it hand on what they got."""
    _budget_shares.set((run, parts))


def _drop(event: AgentEvent) -> None:
    pass


@dataclass(eq=False)
class RunContext:
    agent: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    parent: RunContext | None = None
    sink: EventSink = _drop
    deadline: float | None = None
    """time.monotonic() after which the run stops; children inherit it."""
    remote_parent_id: str | None = None
    """The caller's run id when the parent run lives in another process."""
    budget: Budget | None = None
    """What this run and the runs beneath it may still spend (None: no limit)."""
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    _children: weakref.WeakSet[RunContext] = field(default_factory=weakref.WeakSet, repr=False)
    _on_cancel: list[Callable[[], object]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _usage_below: list[Mapping[str, AgentUsage]] = field(default_factory=list, repr=False)
    spent: Callable[[], AgentUsage] = field(default=AgentUsage, repr=False)
    """What the run has spent so far, delegates included (set by the running agent)."""
    inputs: InputChannel | None = field(default=None, repr=False)
    """Where ``user_input`` questions go: set when the run's caller can answer them."""
    metadata: dict[str, str] = field(default_factory=dict, repr=False)
    """The caller's request metadata (e.g. an A2A message id), for tools and models that
    care who asked; a run's children see their parent's."""

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    @property
    def parent_run_id(self) -> str | None:
        return self.remote_parent_id if self.parent is None else self.parent.run_id

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def remaining_budget(self) -> Budget | None:
        """What a run delegated now may spend: what is left, or a fan-out's share of it."""
        if self.budget is None:
            return None
        left = self.budget.remaining(self.spent())
        shares = _budget_shares.get()
        return left.share(shares[1]) if shares is not None and shares[0] is self else left

    def child(self, agent: str) -> RunContext:
        child = RunContext(agent=agent, parent=self, sink=self.sink, deadline=self.deadline,
                           budget=self.remaining_budget(), inputs=self.inputs,
                           metadata=self.metadata)  # fmt: skip
        with self._lock:
            self._children.add(child)
        if self.cancelled:
            child.cancel()
        return child

    def emit(self, event: AgentEvent) -> None:
        self.sink(event)

    def report(self, event_type: type[E], step: int = 0, **fields: Any) -> E:
        """Build an event stamped with this run's identity, emit it, return it."""
        event = event_type(
            agent=self.agent,
            run_id=self.run_id,
            parent_run_id=self.parent_run_id,
            depth=self.depth,
            step=step,
            timestamp=time.time(),
            **fields,
        )
        self.sink(event)
        return event

    def cancel(self) -> None:
        """Cancel this run and its children; fire the registered callbacks once."""
        with self._lock:
            if self._cancelled.is_set():
                return
            self._cancelled.set()
            callbacks, self._on_cancel = self._on_cancel, []
            children = list(self._children)
        for callback in callbacks:
            callback()
        for child in children:
            child.cancel()

    def add_usage_below(self, by_agent: Mapping[str, AgentUsage]) -> None:
        """Record what a run beneath this one used (local or remote), for the roll-up."""
        with self._lock:
            self._usage_below.append(by_agent)

    def usage_below(self) -> dict[str, AgentUsage]:
        with self._lock:
            return merge_usage(self._usage_below)

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` when this run is cancelled (at once if it already is).

        Returns a function that forgets the callback, for work that ends before the run
        does (a model request), so that a long run does not collect dead callbacks.
        """
        with self._lock:
            if not self._cancelled.is_set():
                self._on_cancel.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if callback in self._on_cancel:
                self._on_cancel.remove(callback)

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, unless the run is cancelled or its deadline passes first:
        then stop at once with that error."""
        remaining = self.remaining()
        wait = seconds if remaining is None else min(seconds, max(remaining, 0.0))
        self._cancelled.wait(wait)  # a parent's cancel reaches this event through the cascade
        self.raise_if_cancelled()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set() or (self.parent is not None and self.parent.cancelled)

    def raise_if_cancelled(self) -> None:
        """Stop here if the run was cancelled or its deadline has passed."""
        if self.cancelled:
            raise RunCancelledError(f"run {self.run_id} of {self.agent} was cancelled")
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError(f"run {self.run_id} of {self.agent} ran past its deadline")
