"""``EventFeed``: a blocking stream of Server-Sent Event messages, read by an async response.

A run's events arrive on a gRPC stream that ``AgentClient`` reads synchronously,
so each open page's stream has a thread of its own that reads it and hands the
messages to the event loop. Between the two is a buffer bounded in bytes: the
thread waits while it is full (gRPC's flow control then holds the service back,
and nothing grows), and a client that reads nothing for ``slow_client_s`` while
its buffer is full is dropped (the page's EventSource reconnects and resumes
from the last index it got). The loop side flushes whatever has arrived at
once, as one write, and writes a comment every ``keepalive_s`` when idle so that
proxies and browsers keep the connection open.

``EventFeeds`` counts the open feeds (a console serves a bounded number of
streams) and closes them all when the console stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from mesh.errors import MeshError

__all__ = ["KEEPALIVE", "EventFeed", "EventFeeds"]

log = logging.getLogger("mesh.console")

KEEPALIVE = ": keep-alive\n\n"
MAX_BUFFER_BYTES = 512 * 1024
SLOW_CLIENT_S = 10.0


class EventFeed:
    """``messages`` read by a thread, handed out by ``chunks()``; ``cancel`` ends the
    source early (called by ``close``, from any thread)."""

    def __init__(
        self,
        messages: Iterator[str],
        cancel: Callable[[], None],
        *,
        keepalive_s: float = 15.0,
        max_bytes: int = MAX_BUFFER_BYTES,
        slow_client_s: float = SLOW_CLIENT_S,
    ) -> None:
        self._messages = messages
        self._cancel = cancel
        self._keepalive_s = keepalive_s
        self._max_bytes = max_bytes
        self._slow_client_s = slow_client_s
        self._lock = threading.Condition()
        self._pending: list[str] = []
        self._bytes = 0
        self._signalled = False  # a wake-up is on its way to the loop
        self._over = False  # the source has nothing more (or the feed was dropped)
        self._closed = False
        self.dropped = False
        """Whether the client was dropped for reading too slowly."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()

    async def chunks(self) -> AsyncIterator[str]:
        """What has arrived, one chunk per wake-up, until the source ends; a keep-alive
        comment when nothing came for ``keepalive_s``."""
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._pump, name="console-feed", daemon=True).start()
        while True:
            self._wakeup.clear()
            text, over = self._take()
            if text:
                yield text
            if over:
                return
            if text:
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._keepalive_s)
            except TimeoutError:
                yield KEEPALIVE

    def close(self) -> None:
        """Stop reading the source (its thread ends) and end ``chunks``."""
        with self._lock:
            if self._closed:
                return
            self._closed = self._over = True
            self._lock.notify_all()
        self._cancel()
        self._wake()

    # The thread -----------------------------------------------------------------------

    def _pump(self) -> None:
        try:
            for message in self._messages:
                if not self._put(message):
                    break
        except MeshError as err:  # the agent went away, or the watch was cancelled
            if not self._closed:
                log.info("a run's event stream ended early: %s", err.message)
        except Exception:
            log.exception("a run's event stream failed")
        finally:
            with self._lock:
                self._over = True
            self._wake()

    def _put(self, message: str) -> bool:
        """Buffer ``message``; False when the feed is closed or the client too slow."""
        with self._lock:
            deadline = time.monotonic() + self._slow_client_s
            while self._bytes >= self._max_bytes and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.dropped = True
                    log.info("dropped a client that read a run's events too slowly")
                    break
                self._lock.wait(left)
            if self._closed or self.dropped:
                self._over = True
                wake = True
            else:
                self._pending.append(message)
                self._bytes += len(message)
                wake, self._signalled = not self._signalled, True
        if wake:
            self._wake()
        if self.dropped:
            self._cancel()
        return not (self._closed or self.dropped)

    def _wake(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the console stopped
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # The loop -------------------------------------------------------------------------

    def _take(self) -> tuple[str, bool]:
        with self._lock:
            pending, self._pending = self._pending, []
            self._bytes, self._signalled = 0, False
            self._lock.notify_all()
            return "".join(pending), self._over


class EventFeeds:
    """The open feeds of a console: at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: set[EventFeed] = set()
        self._lock = threading.Lock()

    def add(self, feed: EventFeed) -> bool:
        """Count ``feed`` in; False when ``limit`` feeds are open already."""
        with self._lock:
            if len(self._open) >= self.limit:
                return False
            self._open.add(feed)
            return True

    def remove(self, feed: EventFeed) -> None:
        feed.close()
        with self._lock:
            self._open.discard(feed)

    def close_all(self) -> None:
        with self._lock:
            feeds = list(self._open)
        for feed in feeds:
            feed.close()

    def __len__(self) -> int:
        return len(self._open)
