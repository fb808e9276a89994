"""``EventStream``: a streamed or watched run's events, as ``AgentClient`` returns them.

It owns the call and its CLIENT span: the span ends with the stream (its end, its error,
or ``close``), and ``cancel`` may come from any thread, as a run's cancellation does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import grpc
from opentelemetry.trace import Span

from mesh.agents.events import AgentEvent
from mesh.errors import MeshError, RunCancelledError
from mesh.rpc.convert import event_from_proto
from mesh.rpc.status import error_from_rpc
from mesh.run_scope import RunScope
from mesh.telemetry.spans import record_error

__all__ = ["EventStream"]


class EventStream:
    """The events of a streamed or watched run, as they come, in order.

    Iterate it for ``AgentEvent``s, or ``indexed()`` for (index, event) pairs: an event's
    index is its position in the run's record (``watch_run`` resumes from the one after
    the last seen). ``cancel()`` may be called from any thread; the iteration then raises
    ``RunCancelledError``. A failed call raises the ``MeshError`` the server raised.
    Close the stream (or use ``with``) when leaving it before its end.
    """

    def __init__(
        self,
        call: Any,
        who: str,
        span: Span,
        depth_offset: int = 0,
        scope: RunScope | None = None,
    ) -> None:
        self._call = call
        self._who = who
        self._span = span
        self._depth_offset = depth_offset
        self._pending: deque[tuple[int, AgentEvent]] = deque()
        self._cancelled = False
        self._over = False
        self.started = False
        """Whether the service has answered (the run began): until then, a failure means
        that the call never reached a running service."""
        self.index = -1
        """The index of the last event returned (-1 before the first)."""
        self._forget = scope.on_cancel(self.cancel) if scope is not None else _nothing

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> AgentEvent:
        return self.next_indexed()[1]

    def indexed(self) -> Iterator[tuple[int, AgentEvent]]:
        while True:
            try:
                yield self.next_indexed()
            except StopIteration:
                return

    def next_indexed(self) -> tuple[int, AgentEvent]:
        while not self._pending:
            if self._over:
                raise StopIteration
            try:
                response = next(self._call)
            except StopIteration:
                self._end()
                raise
            except grpc.RpcError as err:
                error = (RunCancelledError(f"{self._who}: the call was cancelled")
                         if self._cancelled else error_from_rpc(err, self._who))  # fmt: skip
                self._end(error)
                raise error from err
            self.started = True
            for message in response.events:
                event = event_from_proto(message, depth_offset=self._depth_offset)
                if event is not None:  # a kind this version does not know
                    self._pending.append((message.index, event))
        self.index, event = self._pending.popleft()
        return self.index, event

    def cancel(self) -> None:
        """End the call (a run stream: the run is cancelled too). Safe from any thread."""
        self._cancelled = True
        self._call.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def close(self) -> None:
        if not self._over:
            self.cancel()
            self._end()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _end(self, error: MeshError | None = None) -> None:
        if self._over:
            return
        self._over = True
        self._forget()
        if error is not None:
            record_error(self._span, error.message)
        self._span.end()


def _nothing() -> None:
    pass
