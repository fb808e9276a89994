"""The run a piece of work belongs to, as the layers below agents see it.

Model calls, tool calls and MCP requests must stop when their run is
cancelled and never outlive its deadline, but they sit below the agents that
own runs. They see the active run through this narrow view, found in a
``ContextVar`` that follows the call into any code; agents put their
``RunContext`` there, and only they know it as more than this.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Protocol

__all__ = ["RunScope", "current_scope"]


class RunScope(Protocol):
    run_id: str
    agent: str

    @property
    def cancelled(self) -> bool: ...

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""

    def raise_if_cancelled(self) -> None:
        """Stop here (``RunCancelledError``, ``DeadlineExceededError``) if the run is over."""

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` on cancellation; returns a function that forgets it."""

    def pause(self, seconds: float) -> None:
        """Sleep, but stop at once with the run's error if it is cancelled or runs out."""


current_scope: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar(
    "mesh_current_run", default=None
)
