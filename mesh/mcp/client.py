"""``MCPClient``: a long-lived connection to one MCP server, for synchronous callers.

Agents are synchronous and run in threads; the mcp SDK is async. So each
client runs an event loop in a background thread, and every call from an
agent thread is a coroutine submitted to it (``Connection`` holds the
session there). Many threads may call at once: the session multiplexes.

A call is bounded by the smaller of ``call_timeout_s`` and what the current
run has left (``run_scope.current_scope``), and cancelling the run cancels the call (the
server is sent ``notifications/cancelled``). Every failure comes back as a
``ToolExecutionError`` the model can read; nothing here ends a run.

When the server dies, or its connection breaks, the client forgets that
connection and starts a new one on a later call, but never sooner than
``FIRST_RETRY_S`` after the failure, doubling with each failure in a row up to
``MAX_RETRY_S``; meanwhile calls fail at once, saying when the next attempt
will be. A successful call resets the count. A restarted server must offer
the same schemas as at start: a tool that changed is refused rather than
called with arguments checked against the old one.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
import time
import weakref
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mesh.errors import ConfigError, ToolExecutionError
from mesh.mcp.logs import describe, quiet_sdk_tracebacks
from mesh.mcp.params import MCPServerParameters
from mesh.mcp.schema import canonical
from mesh.mcp.tool import MCPTool, build_tools
from mesh.models.litellm_model import RetryPolicy
from mesh.run_scope import current_scope
from mesh.text import clip
from mesh.tools.base import Tool

if TYPE_CHECKING:
    from mesh.mcp.connection import CallHandle, Connection

# The mcp SDK takes ~0.6 s to import, so the modules over it (connection, results) are
# imported by the methods that need them: ``import mesh`` stays cheap without MCP servers.

__all__ = ["MCPClient", "mcp_tools"]

log = logging.getLogger("mesh.mcp")

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 30.0
RESTART_BACKOFF = RetryPolicy(initial_delay_s=FIRST_RETRY_S, max_delay_s=MAX_RETRY_S)
SHUTDOWN_S = 10.0
"""Bounds stopping a connection: the SDK's stop sequence takes up to ~6.5 s on a stubborn server."""
CALL_GRACE_S = 2.0
"""How long past a call's deadline to wait for the loop to report back (normally no time)."""

_live: weakref.WeakSet[MCPClient] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Stop every server still running when the process exits, whoever forgot to."""
    for client in list(_live):
        client.close()


class MCPClient:
    """Long-lived connection to one MCP server, usable from synchronous threads."""

    def __init__(self, params: MCPServerParameters) -> None:
        self.params = params
        self.tools: list[MCPTool] = []
        self._lock = threading.Lock()  # guards the state below; never held while waiting
        self._connect_lock = threading.Lock()  # one (re)connection at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._runs: list[tuple[Connection, concurrent.futures.Future[None]]] = []
        self._schemas: dict[str, str] = {}
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""
        self._closed = False

    def start(self) -> list[Tool]:
        """Start (or reach) the server and return its tools; ``ConfigError`` names the server
        and the cause, within ``startup_timeout_s`` (plus the stop sequence on failure)."""
        from mesh.mcp.connection import StartFailed

        with self._lock:
            if self._loop is not None or self._closed:
                raise ConfigError(f"mcp server {self.params.name}: start() was already called")
            self._loop = asyncio.new_event_loop()
        quiet_sdk_tracebacks()
        self._loop.set_exception_handler(self._loop_error)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"mcp-{self.params.name}")  # fmt: skip
        self._thread.start()
        _live.add(self)
        try:
            conn = self._connect(self.params.startup_timeout_s)
            self.tools = build_tools(self, conn.tools)
        except StartFailed as err:
            self.close()
            raise ConfigError(f"mcp server {self.params.name}: {err}") from None
        except BaseException:
            self.close()
            raise
        self._schemas = {t.remote_name: canonical(conn.listed[t.remote_name].input_schema)
                         for t in self.tools}  # fmt: skip
        log.info("mcp server %s: %d tool(s): %s", self.params.name, len(self.tools),
                 clip(", ".join(t.name for t in self.tools), 500))  # fmt: skip
        return list(self.tools)

    def call(
        self, tool_name: str, arguments: Mapping[str, Any], timeout_s: float | None = None
    ) -> Any:
        """Call a tool by its server name; the answer as text or dict (``mesh.mcp.results``)."""
        from mesh.mcp.connection import CallHandle
        from mesh.mcp.results import result_value

        where = f"mcp server {self.params.name}: tool {clip(tool_name, 80)}"
        run = current_scope.get()
        limit = (
            self.params.call_timeout_s
            if timeout_s is None
            else min(timeout_s, self.params.call_timeout_s)
        )
        remaining = run.remaining() if run is not None else None
        by_run = remaining is not None and remaining < limit
        timeout = min(limit, remaining) if remaining is not None else limit
        if run is not None and run.cancelled:
            raise ToolExecutionError(f"{where}: the run was cancelled")
        if timeout <= 0:
            raise ToolExecutionError(f"{where}: the run's deadline has passed")
        late = (f"{where}: no answer before the run's deadline ({timeout:.1f} s)" if by_run
                else f"{where}: no answer within {timeout:g} s")  # fmt: skip
        deadline = time.monotonic() + timeout
        conn = self._connection(deadline, where, late)
        structured = self._check_unchanged(conn, tool_name, where)
        loop = self._running_loop(where)
        handle = CallHandle(loop)
        forget = run.on_cancel(handle.cancel) if run is not None else lambda: None
        try:
            result = self._await(conn.call(tool_name, dict(arguments),
                                           max(0.0, deadline - time.monotonic()), handle),
                                 loop, deadline, handle, where, late)  # fmt: skip
        finally:
            forget()
        with self._lock:
            self._failures = 0
        return result_value(where, result, structured)

    def _await(
        self,
        call: Coroutine[Any, Any, Any],
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        handle: CallHandle,
        where: str,
        late: str,
    ) -> Any:
        """The call's result from the client's loop; every way it can fail as a tool error."""
        from mcp.shared.exceptions import MCPError

        from mesh.mcp.connection import CallCancelled, ConnectionLost

        try:
            future = asyncio.run_coroutine_threadsafe(call, loop)
        except RuntimeError:  # closed a moment ago
            call.close()
            raise ToolExecutionError(f"{where}: the mcp client is closed") from None
        try:
            result = future.result(max(0.0, deadline - time.monotonic()) + CALL_GRACE_S)
        except TimeoutError:
            handle.cancel()
            raise ToolExecutionError(late) from None
        except (CallCancelled, concurrent.futures.CancelledError):
            raise ToolExecutionError(f"{where}: the call was cancelled") from None
        except ConnectionLost as err:
            then = "" if self._closed else "; a later call restarts the server"
            raise ToolExecutionError(f"{where}: {err}{then}") from None
        except MCPError as err:
            raise ToolExecutionError(f"{where}: the server answered error {err.code}: "
                                     f"{clip(err.message, 500)}") from None  # fmt: skip
        except Exception as err:  # e.g. a result that breaks the protocol or its output schema
            raise ToolExecutionError(f"{where}: {describe(err)}") from None
        return result

    def close(self) -> None:
        """Stop the server (no orphans: its whole process group goes) and the loop; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn = None
            loop, runs = self._loop, list(self._runs)
        _live.discard(self)
        if loop is None or loop.is_closed():
            return
        for conn, _ in runs:
            loop.call_soon_threadsafe(conn.stop)
        concurrent.futures.wait([run for _, run in runs], timeout=SHUTDOWN_S)
        try:
            asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result(SHUTDOWN_S)
        except (TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            log.warning("mcp server %s: tasks still running at close", self.params.name)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(SHUTDOWN_S)
        if self._thread is None or not self._thread.is_alive():
            loop.close()

    def __enter__(self) -> MCPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections ---------------------------------------------------------------------

    def _connect(self, startup_s: float) -> Connection:
        """Open a new connection (the caller holds ``_connect_lock`` or is ``start``)."""
        from mesh.mcp.connection import Connection, StartFailed

        loop = self._running_loop(f"mcp server {self.params.name}")
        conn = Connection(self.params, self._lost)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:  # registered atomically, so that close() stops it whatever the timing
            if self._closed:
                raise StartFailed("the client is closed")
            run = asyncio.run_coroutine_threadsafe(conn.run(ready, startup_s), loop)
            self._runs = [(c, r) for c, r in self._runs if not r.done()] + [(conn, run)]
        try:
            ready.result(startup_s + SHUTDOWN_S)  # the run reports after its own deadline
        except TimeoutError:
            loop.call_soon_threadsafe(conn.stop)
            raise StartFailed(f"start-up took longer than {startup_s:g} s") from None
        with self._lock:
            if self._closed:
                loop.call_soon_threadsafe(conn.stop)
                raise StartFailed("the client was closed while starting")
            self._conn = conn
        return conn

    def _connection(self, deadline: float, where: str, late: str) -> Connection:
        """The live connection, or a new one if the backoff allows (else fail fast)."""
        from mesh.mcp.connection import StartFailed

        if (conn := self._usable(where)) is not None:
            return conn
        if not self._connect_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ToolExecutionError(late)
        try:
            if (conn := self._usable(where)) is not None:
                return conn
            startup_s = min(self.params.startup_timeout_s, deadline - time.monotonic())
            if startup_s <= 0:
                raise ToolExecutionError(late)
            try:
                conn = self._connect(startup_s)
            except StartFailed as err:
                with self._lock:
                    delay = self._note_failure(str(err))
                log.warning("mcp server %s could not be restarted: %s", self.params.name, err)
                raise ToolExecutionError(f"{where}: the server could not be restarted ({err}); "
                                         f"next attempt in {delay:.1f} s") from None  # fmt: skip
            log.warning("mcp server %s restarted", self.params.name)
            return conn
        finally:
            self._connect_lock.release()

    def _usable(self, where: str) -> Connection | None:
        with self._lock:
            if self._closed or self._loop is None:
                state = "closed" if self._closed else "not started"
                raise ToolExecutionError(f"{where}: the mcp client is {state}")
            conn = self._conn
            if conn is not None:
                if conn.alive:
                    return conn
                self._conn = None  # lost a moment ago; its callback may not have run yet
                self._note_failure(conn.lost_reason or "the connection closed")
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise ToolExecutionError(f"{where}: the server is down "
                                         f"({clip(self._last_error, 300)}); next restart "
                                         f"attempt in {wait:.1f} s")  # fmt: skip
            return None

    def _lost(self, conn: Connection, reason: str) -> None:
        """A connection ended by itself (called on the loop thread)."""
        with self._lock:
            if self._conn is not conn:
                return
            self._conn = None
            delay = self._note_failure(reason)
        log.warning("mcp server %s: %s; a call after %.1f s restarts it",
                    self.params.name, reason, delay)  # fmt: skip

    def _note_failure(self, reason: str) -> float:
        """Count a failure and set the next restart time (``_lock`` held)."""
        self._failures += 1
        delay = RESTART_BACKOFF.delay(self._failures - 1)
        self._retry_at = time.monotonic() + delay
        self._last_error = reason
        return delay

    def _check_unchanged(self, conn: Connection, tool_name: str, where: str) -> bool:
        """Whether the tool answers structured content; refuses a tool changed by a restart."""
        listed = conn.listed.get(tool_name)
        if tool_name in self._schemas and (
            listed is None or canonical(listed.input_schema) != self._schemas[tool_name]
        ):
            change = "no longer offers it" if listed is None else "changed its input schema"
            raise ToolExecutionError(f"{where}: since start, the restarted server {change}; "
                                     "restart the agent to take the change")  # fmt: skip
        return listed is not None and listed.output_schema is not None

    def _running_loop(self, where: str) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise ToolExecutionError(f"{where}: the mcp client is not running")
        return loop

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Unhandled errors on the loop: one line in the log, not a traceback."""
        error = context.get("exception")
        detail = describe(error) if isinstance(error, BaseException) else ""
        log.warning("mcp server %s: %s %s", self.params.name, context.get("message", ""), detail)


async def _cancel_other_tasks() -> None:
    """Cancel what is left on the loop (calls of a closed client) and let it unwind."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=SHUTDOWN_S)


@contextmanager
def mcp_tools(*params: MCPServerParameters) -> Iterator[list[Tool]]:
    """The tools of these servers for one ``with`` block; every server is stopped after it.

    ``with mcp_tools(MCPServerParameters(name="files", command="...")) as tools:
    agent = ToolCallingAgent(tools=tools, model=model)``
    """
    names = [p.name for p in params]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ConfigError(f"mcp servers named more than once: {', '.join(duplicates)}")
    clients: list[MCPClient] = []
    tools: list[Tool] = []
    owner: dict[str, str] = {}
    try:
        for server in params:
            client = MCPClient(server)
            clients.append(client)
            for tool in client.start():
                if tool.name in owner:
                    raise ConfigError(
                        f"mcp servers {owner[tool.name]} and {server.name} both offer a tool "
                        f"{tool.name!r}; exclude it from one"
                    )
                owner[tool.name] = server.name
                tools.append(tool)
        yield tools
    finally:
        for client in reversed(clients):
            client.close()
