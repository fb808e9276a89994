"""``A2AAgent``: an agent of any framework, reached over A2A, used like a mesh agent.

Give it to ``managed_agents=[...]`` as you would a ``RemoteAgent``: the
manager's model calls it by name with a task. It is configured by the URL of
its agent card, which names it and describes it (unless told otherwise) and
says how to call it: over A2A's gRPC binding by preference, over JSON-RPC or
HTTP+JSON when the card offers nothing else (the A2A SDK speaks all three).

Each call sends the task as a user message (``additional_args`` as a data
part) and follows the task it starts: streamed when the card says the agent
streams, else polled with ``GetTask``. It shows in the caller's stream as a
child run one level deeper (``remote_task``), which ends exactly once with
what happened. The caller's remaining deadline becomes the calls' timeout;
when the caller's run is cancelled, its deadline passes, or the call ends
early for any reason, the task is cancelled (``CancelTask``, best effort)
before the call returns. Failed, rejected or cancelled tasks, and tasks
that ask for input, are ``RemoteAgentError``s, which the manager's model
reads as the tool's error.

The A2A SDK is asyncio; our tools run on worker threads and block on a call.
The calls of one ``A2AAgent`` run on a loop of its own (``remote_loop``),
started on the first call with the agent's client; ``close()`` cancels the
calls going on and stops the loop. Answers are data from outside the mesh:
the manager's model reads them fenced as untrusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, cast

from a2a.client import ClientCallContext
from a2a.client.client import Client
from a2a.types import a2a_pb2 as a2a
from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict
from opentelemetry.trace import SpanKind

from mesh.agents.context import RunContext, active_run
from mesh.agents.events import FinalAnswer, RunFinished, RunStarted
from mesh.agents.run_args import checked_args
from mesh.errors import (
    AgentUnavailableError,
    ConfigError,
    DeadlineExceededError,
    ErrorInfo,
    InvalidRequestError,
    MeshError,
    RemoteAgentError,
    RunCancelledError,
)
from mesh.models.base import TokenUsage
from mesh.rpc.a2a.card_fetch import agent_name, card_location, describe, fetch_card
from mesh.rpc.a2a.remote_channel import Connection, call_parameters, translated
from mesh.rpc.a2a.remote_task import TERMINAL, TaskRelay
from mesh.rpc.security import MeshSecurity
from mesh.telemetry.spans import record_error, tracer
from mesh.text import clip

__all__ = ["A2AAgent"]

CANCEL_TIMEOUT_S = 2.0
"""How long a CancelTask may take: it is sent when the call is over for us."""
ID_WAIT_S = 1.0
"""How long a call stopped before the agent named its task waits for the name, to cancel it."""
CLOSE_WAIT_S = CANCEL_TIMEOUT_S + 1.0
"""How long ``close()`` lets the calls it stopped cancel their tasks."""
Context = Callable[..., ClientCallContext]
"""A request's ``ClientCallContext``: the call's time left, or the timeout given (a
CancelTask is sent when that time may be up)."""


class A2AAgent:
    untrusted = True
    """The model reads its answers fenced as data (``Tool.untrusted``): they come from
    outside the mesh."""

    def __init__(
        self,
        card_url: str,
        name: str | None = None,
        description: str | None = None,
        *,
        timeout_s: float | None = None,
        token: str | None = None,
        security: MeshSecurity | None = None,
        card_timeout_s: float = 5.0,
    ) -> None:
        """``card_url``: the agent card's URL, or the agent's base URL (the well-known
        path is added). Without a ``name`` or ``description`` the card is fetched now, to
        give them; otherwise on the first call. ``token``: sent as a bearer token.
        ``security``: the mesh's TLS settings, for an interface given as a bare address."""
        self.card_url = card_location(card_url)
        self.timeout_s = timeout_s
        self.security = security
        self.card_timeout_s = card_timeout_s
        self._token = token
        self._lock = threading.Lock()
        self._card: a2a.AgentCard | None = None
        self._connection: Connection | None = None
        self._release: weakref.finalize[[], A2AAgent] | None = None
        """Closes the connection: at ``close()``, or when the agent is dropped without it."""
        self._calls: set[_Stop] = set()
        self._closed = False
        if name is not None and not (name.isascii() and name.isidentifier()):
            raise ConfigError(f"A2A agent name {clip(name, 80)!r}: must be a Python identifier")
        card = self._fetched_card() if name is None or description is None else None
        self.name = name if name is not None else agent_name(cast(a2a.AgentCard, card))
        self.description = (
            description if description is not None else describe(cast(a2a.AgentCard, card))
        )

    def run(self, task: str, additional_args: Mapping[str, Any] | None = None) -> Any:
        """Have the agent do ``task`` and return its answer (see the module docstring)."""
        if not task.strip():
            raise InvalidRequestError(f"{self.name}: the task is empty")
        message = _message(task, checked_args(additional_args))
        parent = active_run()
        run = parent.child(self.name) if parent is not None else RunContext(agent=self.name)
        run.raise_if_cancelled()
        self._timeout(run)  # no time left: not worth fetching the card
        connection, stop = self._connect()  # may fail: before the child run starts
        forget = run.on_cancel(lambda: stop.trigger("cancelled"))
        try:
            timeout = self._timeout(run)  # what is left after the card was fetched
            return self._run(connection, stop, run, task, message, timeout)
        finally:
            forget()
            with self._lock:
                self._calls.discard(stop)

    def _run(
        self,
        connection: Connection,
        stop: _Stop,
        run: RunContext,
        task: str,
        message: a2a.Message,
        timeout: float | None,
    ) -> Any:
        """The call as the child run ``run``: started, and ended exactly once."""
        started = time.monotonic()
        run.report(RunStarted, task=task)
        relay = TaskRelay(run, self.name)
        with tracer.start_as_current_span(
            f"a2a {self.name}", kind=SpanKind.CLIENT, record_exception=False,
            set_status_on_exception=False, attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.name,
                "mesh.run_id": run.run_id, "url.full": clip(self.card_url, 200)},
        ) as span:  # fmt: skip
            parameters = call_parameters(span, self._token)
            try:
                call = self._call(connection, stop, message, relay, timeout, parameters)
                answer = connection.loop.run(call)
            except BaseException as err:
                error = ErrorInfo.of(err)
                record_error(span, error)
                run.report(RunFinished, step=relay.steps, usage=TokenUsage(), steps=relay.steps,
                           duration_s=time.monotonic() - started, error=error)  # fmt: skip
                raise
        run.report(FinalAnswer, step=relay.steps, answer=answer)
        run.report(RunFinished, step=relay.steps, usage=TokenUsage(), steps=relay.steps,
                   duration_s=time.monotonic() - started)  # fmt: skip
        return answer

    def close(self) -> None:
        """Refuse new calls, stop those going on (their tasks are cancelled), and release
        the loop and its client."""
        with self._lock:
            self._closed = True
            calls, release, self._connection = list(self._calls), self._release, None
        for stop in calls:
            stop.trigger("closed")
        deadline = time.monotonic() + CLOSE_WAIT_S
        while self._calls and time.monotonic() < deadline:
            time.sleep(0.02)  # the stopped calls cancel their tasks, on the loop
        if release is not None:
            release()

    def _fetched_card(self) -> a2a.AgentCard:
        """The card, fetched once (a failed fetch is tried again on the next call)."""
        with self._lock:
            if self._card is None:
                self._card = fetch_card(self.card_url, self.card_timeout_s)
            return self._card

    def _connect(self) -> tuple[Connection, _Stop]:
        """The connection, and a new call on it that ``close()`` will wait for."""
        if self._closed:
            raise AgentUnavailableError(f"{self.name}: this A2AAgent was closed")
        card = self._fetched_card()
        with self._lock:
            if self._closed:
                raise AgentUnavailableError(f"{self.name}: this A2AAgent was closed")
            if self._connection is None:
                self._connection = Connection(self.name, card, self.security)
                self._release = weakref.finalize(self, self._connection.close)
            stop = _Stop(self._connection.loop.loop)
            self._calls.add(stop)
            return self._connection, stop

    def _timeout(self, run: RunContext) -> float | None:
        remaining = run.remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError(f"no time left to delegate to {self.name}")
        if remaining is None:
            return self.timeout_s
        return remaining if self.timeout_s is None else min(remaining, self.timeout_s)

    async def _call(
        self,
        connection: Connection,
        stop: _Stop,
        message: a2a.Message,
        relay: TaskRelay,
        timeout: float | None,
        parameters: dict[str, str],
    ) -> Any:
        """The call, on the agent's loop: follow the task until it settles or the call is
        stopped; then cancel the task if it is still going."""
        if stop.reason:  # stopped before it began: nothing sent, nothing to cancel
            raise self._stopped(stop)
        deadline = None if timeout is None else time.monotonic() + timeout

        def context(limit: float | None = None) -> ClientCallContext:
            if limit is None and deadline is not None:
                limit = max(deadline - time.monotonic(), 0.001)
            return ClientCallContext(timeout=limit, service_parameters=parameters)

        client = connection.client()
        follow = self._stream if connection.card.capabilities.streaming else self._poll
        work = asyncio.ensure_future(follow(client, message, relay, context))
        stopped = asyncio.ensure_future(stop.event.wait())
        try:
            await asyncio.wait({work, stopped}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            stopped.cancel()
        error = self._ending(work, stop, timeout)
        if relay.state not in TERMINAL:
            await _end_task(client, work, relay, context)
        if error is not None:
            raise error
        return relay.outcome()

    def _ending(
        self, work: asyncio.Future[None], stop: _Stop, timeout: float | None
    ) -> MeshError | None:
        """Why the call ends early (None: the task settled, and says how it went)."""
        if work.done() and not work.cancelled() and work.exception() is None:
            return None
        if stop.reason:
            return self._stopped(stop)
        if not work.done():
            return DeadlineExceededError(f"the call to {self.name} ran past its deadline "
                                         f"({timeout or 0:.1f} s)")  # fmt: skip
        return translated(cast(BaseException, work.exception()), self.name)

    def _stopped(self, stop: _Stop) -> MeshError:
        if stop.reason == "cancelled":
            return RunCancelledError(f"the call to {self.name} was cancelled")
        return AgentUnavailableError(f"{self.name}: this A2AAgent was closed mid-call")

    async def _stream(
        self, client: Client, message: a2a.Message, relay: TaskRelay, context: Context
    ) -> None:
        request = a2a.SendMessageRequest(message=message)
        async with _replies(client, request, context()) as stream:
            async for response in stream:
                relay.take(response)
                if relay.settled:
                    return

    async def _poll(
        self, client: Client, message: a2a.Message, relay: TaskRelay, context: Context
    ) -> None:
        """Without streaming: send the message, return at once, then ``GetTask`` until it
        settles (a call that waited for the end could not cancel a task it cannot name)."""
        request = a2a.SendMessageRequest(message=message)
        request.configuration.return_immediately = True
        async with _replies(client, request, context()) as stream:
            async for response in stream:
                relay.take(response)
        delay = 0.1
        while not relay.settled:
            if not relay.task_id:
                raise RemoteAgentError(f"{self.name} answered with neither a task nor a message")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)
            request_task = a2a.GetTaskRequest(id=relay.task_id, history_length=0)
            relay.take_task(await client.get_task(request_task, context=context()))

    def __repr__(self) -> str:
        return f"<A2AAgent {self.name!r} at {self.card_url}>"


class _Stop:
    """Stops one call from any thread: its run was cancelled, or its agent closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.reason = ""

    def trigger(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
        with contextlib.suppress(RuntimeError):  # the loop closed: the call is over anyway
            self.loop.call_soon_threadsafe(self.event.set)


async def _end_task(
    client: Client, work: asyncio.Future[None], relay: TaskRelay, context: Context
) -> None:
    """Stop following the task and cancel it, best effort: nobody will use what it does."""
    waited = 0.0
    while not relay.task_id and not work.done() and waited < ID_WAIT_S:
        await asyncio.sleep(0.02)  # stopped before the agent named its task: wait a little
        waited += 0.02
    if relay.task_id:
        request = a2a.CancelTaskRequest(id=relay.task_id)
        with contextlib.suppress(Exception):  # it ended already, or its agent is gone
            await asyncio.wait_for(client.cancel_task(request, context=context(CANCEL_TIMEOUT_S)),
                                   CANCEL_TIMEOUT_S + 0.5)  # fmt: skip
    work.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):  # reported already, if at all
        await work


def _message(task: str, args: dict[str, Any]) -> a2a.Message:
    """The user message of a call: the task as text, its arguments as one data part."""
    parts = [a2a.Part(text=task)]
    if args:
        parts.append(a2a.Part(data=ParseDict(args, struct_pb2.Value()),
                              media_type="application/json"))  # fmt: skip
    return a2a.Message(message_id=uuid.uuid4().hex, role=a2a.Role.ROLE_USER, parts=parts)


def _replies(
    client: Client, request: a2a.SendMessageRequest, context: ClientCallContext
) -> contextlib.aclosing[AsyncGenerator[a2a.StreamResponse, None]]:
    """The replies to ``request``, closed (and their call with them) when the block ends,
    even before they do."""
    replies = client.send_message(request, context=context)  # an async generator, typed looser
    return contextlib.aclosing(cast(AsyncGenerator[a2a.StreamResponse, None], replies))
