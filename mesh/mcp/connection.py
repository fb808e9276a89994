"""One live session with an MCP server, held by one task on the client's event loop.

The mcp SDK is async and built on anyio, whose transports and sessions are
context managers that must be entered and left by the same task. So one task
(``Connection.run``) opens the transport and the session, lists the tools,
reports that it is ready and then holds everything open until it is stopped
or the connection is lost; calls run as other tasks on the same loop and
share the session, which multiplexes them.

A connection is lost, for good, when the server closes it (it exited), when
it writes something that is not JSON-RPC (the spec forbids anything else on
a stdio server's stdout, so nothing it says afterwards can be trusted), or
when the transport fails. Whatever is in flight then fails with the reason,
and the client decides when to start a new connection. Leaving the
transport's context stops a stdio server: stdin closed, then SIGTERM, then
SIGKILL to its whole process group (the SDK's shutdown sequence), so no
server outlives its connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
from collections.abc import AsyncIterable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import mcp_types as types
from anyio.streams.memory import MemoryObjectSendStream
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from mesh.errors import ConfigError
from mesh.mcp.logs import StderrPump, describe
from mesh.mcp.params import MCPServerParameters, http_headers, server_environment
from mesh.text import clip
from mesh.version import __version__

__all__ = ["CallCancelled", "Connection", "ConnectionLost", "StartFailed"]

log = logging.getLogger("mesh.mcp")

MAX_LISTING_BYTES = 1_000_000
MAX_TOOLS = 1_000
MAX_PAGES = 100
MAX_SSE_EVENT_BYTES = 8_000_000
"""Above results.MAX_RESULT_CHARS, so that a long answer over HTTP is clipped with a note
like one over stdio, rather than failed by the SDK's 1 MB default."""
CLIENT_INFO = types.Implementation(name="smolmesh", version=__version__)


class StartFailed(Exception):
    """The connection could not be opened (the message says why)."""


class ConnectionLost(Exception):
    """The connection ended under a call (the message says why)."""


class CallCancelled(Exception):
    """The caller cancelled the call."""


class CallHandle:
    """Lets another thread cancel one call: the flag and the scope are only touched on the
    loop thread, so a cancel that arrives before the call has started is not lost."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cancelled = False
        self._scope: anyio.CancelScope | None = None

    def cancel(self) -> None:
        """Thread-safe; a no-op once the client's loop is gone."""
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        self._cancelled = True
        if self._scope is not None:
            self._scope.cancel()

    def attach(self, scope: anyio.CancelScope) -> None:
        self._scope = scope
        if self._cancelled:
            scope.cancel()


class Connection:
    def __init__(
        self, params: MCPServerParameters, on_lost: Callable[[Connection, str], None]
    ) -> None:
        self.params = params
        self.tools: list[types.Tool] = []
        self.listed: dict[str, types.Tool] = {}
        self.lost_reason: str | None = None
        self._on_lost = on_lost
        self._session: ClientSession | None = None
        self._scope: anyio.CancelScope | None = None
        self._stage = "connect"
        self._ready = False
        self._closing = False

    @property
    def alive(self) -> bool:
        return self._ready and self.lost_reason is None and not self._closing

    async def run(self, ready: concurrent.futures.Future[None], startup_s: float) -> None:
        """Open, list the tools, report ``ready``, then hold the session until stopped or
        lost. ``ready`` fails with ``StartFailed`` only once the transport has shut down."""
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + startup_s) as scope:
                self._scope = scope
                if self._closing:  # stopped before this task even began
                    scope.cancel()
                async with AsyncExitStack() as stack:
                    session = await self._open(stack)
                    self._stage = "initialize"
                    await session.initialize()
                    self._stage = "tools/list"
                    self.tools = await self._list_tools(session)
                    self.listed = {tool.name: tool for tool in self.tools}
                    scope.deadline = math.inf
                    self._stage = "the session"
                    self._session, self._ready = session, True
                    ready.set_result(None)
                    await anyio.sleep_forever()
            if not self._ready and scope.cancelled_caught and self.lost_reason is None:
                self._lose(f"start-up took longer than {startup_s:g} s (stuck at {self._stage})")
        except StartFailed as err:
            self._lose(str(err))
        except Exception as err:
            self._lose(self._explain(err))
        finally:
            self._session = None
            if not ready.done():
                ready.set_exception(StartFailed(self.lost_reason or "the connection closed"))

    def stop(self) -> None:
        """End the connection on purpose (on the loop thread); calls in flight end too."""
        self._closing = True
        if self._scope is not None:
            self._scope.cancel()

    async def call(
        self, name: str, arguments: dict[str, Any], timeout_s: float, handle: CallHandle
    ) -> types.CallToolResult:
        """One tools/call; raises TimeoutError, CallCancelled, ConnectionLost or MCPError."""
        session = self._session
        if session is None or not self.alive:
            raise ConnectionLost(self.lost_reason or "the server is not connected")
        with anyio.CancelScope() as scope:
            handle.attach(scope)
            try:
                with anyio.fail_after(timeout_s):
                    return await session.call_tool(name, arguments)
            except MCPError as err:
                if not _ends_session(err):
                    raise
                closed = err.message
            if self._closing:
                raise ConnectionLost("the client was closed during the call")
            # Over stdio the reason is known already (end of stream, garbage); over HTTP this
            # call's own stream broke, and the session is not trusted further either.
            self._lose(f"the connection closed during the call ({clip(closed, 200)})")
            raise ConnectionLost(self.lost_reason or "the connection closed")
        raise CallCancelled

    async def _open(self, stack: AsyncExitStack) -> ClientSession:
        params = self.params
        if params.url:
            try:
                headers = http_headers(params)
            except ConfigError as err:
                raise StartFailed(err.message) from None
            # No read timeout: the SSE stream stays open, and every call has its own deadline.
            http = await stack.enter_async_context(httpx2.AsyncClient(
                headers=headers,
                timeout=httpx2.Timeout(params.startup_timeout_s, read=None),
            ))  # fmt: skip
            read, write = await stack.enter_async_context(streamable_http_client(
                params.url, http_client=http, max_sse_event_size=MAX_SSE_EVENT_BYTES
            ))  # fmt: skip
        else:
            try:
                env = server_environment(params)
            except ConfigError as err:
                raise StartFailed(err.message) from None
            server = StdioServerParameters(command=params.command, args=list(params.args),
                                           env=env, cwd=params.cwd)  # fmt: skip
            pump = StderrPump(params.name)
            try:
                read, write = await stack.enter_async_context(stdio_client(server, pump.writer))
            except OSError as err:
                raise StartFailed(f"cannot start {params.command!r}: {describe(err)}") from None
            finally:
                pump.spawned()
        # The session reads through this forwarder, which sees end-of-stream and garbage
        # first (the session itself would only log them).
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        group = await stack.enter_async_context(anyio.create_task_group())
        group.start_soon(self._forward, read, send)
        return await stack.enter_async_context(ClientSession(
            receive, write, client_info=CLIENT_INFO, logging_callback=self._server_log,
        ))  # fmt: skip

    async def _forward(
        self,
        source: AsyncIterable[SessionMessage | Exception],
        sink: MemoryObjectSendStream[SessionMessage | Exception],
    ) -> None:
        async with sink:
            async for item in source:
                if isinstance(item, Exception):
                    self._lose(f"the server sent something that is not JSON-RPC: {_shown(item)}")
                    return
                await sink.send(item)
        self._lose("the server closed the connection (did it exit? its log is above)")

    async def _list_tools(self, session: ClientSession) -> list[types.Tool]:
        tools: list[types.Tool] = []
        size, cursor = 0, None
        for _ in range(MAX_PAGES):
            page = await session.list_tools(
                params=types.PaginatedRequestParams(cursor=cursor) if cursor else None
            )
            tools.extend(page.tools)
            size += sum(len(tool.model_dump_json(by_alias=True)) for tool in page.tools)
            if size > MAX_LISTING_BYTES or len(tools) > MAX_TOOLS:
                raise StartFailed(f"its tool list is over {MAX_LISTING_BYTES} bytes or "
                                  f"{MAX_TOOLS} tools, more than smolmesh accepts")  # fmt: skip
            cursor = page.next_cursor
            if not cursor:
                return tools
        raise StartFailed(f"its tool list goes on for more than {MAX_PAGES} pages")

    async def _server_log(self, params: types.LoggingMessageNotificationParams) -> None:
        log.info("[%s] %s", self.params.name, clip(str(params.data), 2000, one_line=True))

    def _lose(self, reason: str) -> None:
        """Record why the connection ended (the first reason wins) and end it."""
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        if self._scope is not None:
            self._scope.cancel()
        if self._ready and not self._closing:
            self._on_lost(self, reason)

    def _explain(self, err: Exception) -> str:
        """Why the session could not start or went on no longer, in one line."""
        leaf: BaseException = err
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, StartFailed):
            return str(leaf)
        if isinstance(leaf, MCPError):
            if leaf.code == types.CONNECTION_CLOSED:
                return f"the connection closed during {self._stage}"
            return f"it answered {self._stage} with error {leaf.code}: {clip(leaf.message, 300)}"
        if isinstance(leaf, httpx2.HTTPError):
            return f"HTTP failure during {self._stage}: {describe(leaf)}"
        return f"failure during {self._stage}: {describe(leaf)}"


def _shown(error: Exception) -> str:
    """The offending input of a parse error (pydantic keeps it), else the error itself."""
    if isinstance(error, ValidationError) and error.errors():
        return clip(repr(error.errors()[0].get("input")), 120)
    return describe(error)


def _ends_session(error: MCPError) -> bool:
    """Whether this error means the session is gone: the connection closed under the call, or
    an HTTP server no longer knows the session (it restarted)."""
    if error.code == types.CONNECTION_CLOSED:
        return True
    return error.code == types.INVALID_REQUEST and error.message == "Session terminated"
