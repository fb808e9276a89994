"""An event loop on a thread of its own, for asyncio clients called from sync code.

The A2A SDK is asyncio; our tools run on worker threads and block. One loop
per client, started on first use, runs the client's calls: its gRPC channel
lives as long as the client does (a channel belongs to the loop it was
opened on), and the loop outlives every call on it. A loop per call would
not do: gRPC's asyncio poller may still deliver a cancelled call's last
event to a loop already closed, and says so on stderr.

A call submitted from a thread keeps that thread's context variables (the
current span, the active run): ``run_coroutine_threadsafe`` schedules it in
a copy of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

T = TypeVar("T")
STOP_TIMEOUT_S = 5.0


class BackgroundLoop:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop; its result, or what it raised, in this thread."""
        if self.loop.is_closed():
            coroutine.close()
            raise RuntimeError("the loop was stopped")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self, last: Coroutine[Any, Any, None] | None = None) -> None:
        """Run ``last`` (closing what lives on the loop), then stop and close the loop."""
        if self.loop.is_closed() or threading.current_thread() is self.thread:
            if last is not None:
                last.close()  # stopped already, or asked from the loop itself: no waiting
            if not self.loop.is_closed():
                self.loop.stop()
            return
        with contextlib.suppress(Exception):  # what cannot close goes with the loop
            if last is not None:
                asyncio.run_coroutine_threadsafe(last, self.loop).result(STOP_TIMEOUT_S)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STOP_TIMEOUT_S)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
