"""The runs a server is serving: for Cancel, the concurrency limit, and shutdown."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mesh.agents.context import RunContext
from mesh.errors import AlreadyExistsError, BusyError, NotFoundError

__all__ = ["ActiveRuns"]


class ActiveRuns:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._runs: dict[str, RunContext] = {}
        self._lock = threading.Lock()

    @contextmanager
    def register(self, ctx: RunContext) -> Iterator[RunContext]:
        """Hold a slot for ``ctx`` while the run lasts; refuse beyond the limit."""
        with self._lock:
            if ctx.run_id in self._runs:
                raise AlreadyExistsError(f"run id {ctx.run_id!r} is already running")
            if len(self._runs) >= self.limit:
                raise BusyError(
                    f"{ctx.agent} is running {self.limit} tasks, its limit; retry later"
                )
            self._runs[ctx.run_id] = ctx
        try:
            yield ctx
        finally:
            with self._lock:
                self._runs.pop(ctx.run_id, None)

    def cancel(self, run_id: str) -> None:
        with self._lock:
            ctx = self._runs.get(run_id)
        if ctx is None:
            raise NotFoundError(f"no run {run_id!r} is running here")
        ctx.cancel()

    def cancel_all(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for ctx in runs:
            ctx.cancel()

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)
