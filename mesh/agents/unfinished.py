"""What a relayed stream started and never finished, and the events that finish it.

A stream relayed from another process (a remote agent's run) can break at
any moment: a cancellation, a deadline, a crash of the remote service. The
runs and tool calls it had started would then stay open in the caller's
stream and audit forever. The relay keeps track of them and, when the stream
ends early, finishes each one exactly once with the error that ended it, so
that every RunStarted has its RunFinished and every ToolCallStarted its
ToolCallFinished, whatever the moment.
"""

from __future__ import annotations

import time

from mesh.agents.events import (
    AgentEvent,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from mesh.errors import ErrorInfo
from mesh.models.base import TokenUsage

__all__ = ["Unfinished"]


class Unfinished:
    def __init__(self) -> None:
        self._runs: dict[str, RunStarted] = {}
        self._calls: dict[tuple[str, str], ToolCallStarted] = {}

    def track(self, event: AgentEvent) -> None:
        """Note ``event``, relayed in stream order."""
        match event:
            case RunStarted():
                self._runs[event.run_id] = event
            case RunFinished():
                self._runs.pop(event.run_id, None)
            case ToolCallStarted():
                self._calls[event.run_id, event.call_id] = event
            case ToolCallFinished():
                self._calls.pop((event.run_id, event.call_id), None)

    def finish(self, error: ErrorInfo) -> list[AgentEvent]:
        """The events that end everything still open with ``error``: the tool calls, then
        the runs, innermost first. Each is returned once: tracking starts afresh."""
        now = time.time()
        ended: list[AgentEvent] = []
        for call in sorted(self._calls.values(), key=lambda c: -c.depth):
            ended.append(ToolCallFinished(
                agent=call.agent, run_id=call.run_id, parent_run_id=call.parent_run_id,
                depth=call.depth, step=call.step, timestamp=now, call_id=call.call_id,
                name=call.name, result=f"Error: {error}", error=error,
                duration_s=max(now - call.timestamp, 0.0),
            ))  # fmt: skip
        for run in sorted(self._runs.values(), key=lambda r: -r.depth):
            ended.append(RunFinished(
                agent=run.agent, run_id=run.run_id, parent_run_id=run.parent_run_id,
                depth=run.depth, timestamp=now, usage=TokenUsage(), steps=0,
                duration_s=max(now - run.timestamp, 0.0), error=error,
            ))  # fmt: skip
        self._runs.clear()
        self._calls.clear()
        return ended
