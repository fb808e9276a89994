"""Model requests that a cancellation or a deadline can abort mid-flight.

Agents are synchronous, but a blocking HTTP request cannot be interrupted
from another thread: a cancelled run would wait for the model to finish
answering (seconds, and paid tokens). So the request runs as a coroutine on
one event loop shared by the process, and the calling run thread waits for
it; cancelling the run cancels the coroutine, which closes the HTTP
connection at once, and the run stops with its real outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from mesh.errors import DeadlineExceededError
from mesh.run_scope import current_scope

__all__ = ["pause", "run_abortable"]

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def run_abortable(request: Coroutine[Any, Any, T]) -> T:
    """Await ``request`` on the model loop from this (synchronous) thread.

    Inside a run, the run's cancellation and deadline abort it: it raises the
    run's ``RunCancelledError`` or ``DeadlineExceededError``, and the request
    is closed, not left to finish. Outside a run it simply waits.
    """
    future = asyncio.run_coroutine_threadsafe(request, _model_loop())
    run = current_scope.get()
    if run is None:
        return future.result()
    forget = run.on_cancel(future.cancel)
    try:
        remaining = run.remaining()
        return future.result(timeout=None if remaining is None else max(remaining, 0.0))
    except concurrent.futures.TimeoutError:
        future.cancel()
        run.raise_if_cancelled()
        message = f"run {run.run_id} of {run.agent} ran past its deadline"
        raise DeadlineExceededError(message) from None
    except concurrent.futures.CancelledError:
        run.raise_if_cancelled()  # the run's own error
        raise  # cancelled by someone else: not ours to explain
    finally:
        forget()


def pause(seconds: float) -> None:
    """Sleep, as a model waits (a backoff, a replayed latency); a cancelled run stops at once."""
    run = current_scope.get()
    if run is None:
        time.sleep(seconds)
    else:
        run.pause(seconds)


def _model_loop() -> asyncio.AbstractEventLoop:
    """The process's model loop, started on first use (a daemon thread)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="model-requests", daemon=True).start()
        return _loop
