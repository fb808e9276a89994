"""The runs a server is running: for Cancel, the concurrency limit, and shutdown."""

from __future__ import annotations

import threading

from mesh.agents.context import RunContext
from mesh.errors import AlreadyExistsError, BusyError

__all__ = ["ActiveRuns"]


class ActiveRuns:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._runs: dict[str, RunContext] = {}
        self._lock = threading.Lock()

    def add(self, ctx: RunContext) -> None:
        """Hold a slot for ``ctx`` until ``remove``; refuse beyond the limit."""
        with self._lock:
            if ctx.run_id in self._runs:
                raise AlreadyExistsError(f"run id {ctx.run_id!r} is already running")
            if len(self._runs) >= self.limit:
                raise BusyError(
                    f"{ctx.agent} is running {self.limit} tasks, its limit; retry later"
                )
            self._runs[ctx.run_id] = ctx

    def remove(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def cancel(self, run_id: str) -> bool:
        """Cancel the run if it is going; whether it was."""
        with self._lock:
            ctx = self._runs.get(run_id)
        if ctx is None:
            return False
        ctx.cancel()
        return True

    def get(self, run_id: str) -> RunContext | None:
        with self._lock:
            return self._runs.get(run_id)

    def cancel_all(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for ctx in runs:
            ctx.cancel()

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)
