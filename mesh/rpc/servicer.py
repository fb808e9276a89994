"""``AgentServicer``: the smolmesh.v1.AgentService of one agent, kept thin.

Each method validates, converts from the wire, calls the library, converts
back. Agents are synchronous, so runs execute on a thread pool and their
events cross into the event loop through a queue. A run's context carries
the client's deadline; a client that goes away, or Cancel, cancels it (and
with it the runs it delegated and their jails).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

import grpc

from mesh import untrusted_json
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.base import MultiStepAgent, RunResult
from mesh.agents.context import RunContext
from mesh.agents.events import AgentEvent
from mesh.agents.tool_runner import call_directly
from mesh.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from mesh.host.audit import AuditLog
from mesh.host.run_ledger import RunLedger, describe_error
from mesh.host.runs import ActiveRuns
from mesh.rpc.convert import (
    agent_usage_to_proto,
    answer_text,
    budget_from_proto,
    card_to_proto,
    duration_to_proto,
    event_to_proto,
    to_json,
    tool_change_to_proto,
    tool_spec_from_proto,
    tool_spec_to_proto,
    usage_to_proto,
)
from mesh.rpc.identifiers import check_identifier
from mesh.rpc.security import MeshSecurity
from mesh.rpc.status import translate_errors
from mesh.rpc.tool_admin import ToolAdmin
from mesh.text import clip
from mesh.tools.final_answer import FINAL_ANSWER

__all__ = ["AgentServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
MAX_TASK_CHARS = 100_000
_END = object()
T = TypeVar("T")


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        agent: MultiStepAgent,
        max_concurrent_runs: int = 16,
        audit: AuditLog | None = None,
        tool_admin: ToolAdmin | None = None,
        security: MeshSecurity | None = None,
        ledger: RunLedger | None = None,
    ) -> None:
        self.agent = agent
        self.audit = audit
        self.tool_admin = tool_admin
        self.security = security
        self.ledger = ledger
        self.runs = ActiveRuns(max_concurrent_runs)
        self._threads = ThreadPoolExecutor(
            max_workers=max_concurrent_runs + 4, thread_name_prefix=f"{agent.name}-run"
        )

    @translate_errors
    async def Describe(self, request: pb.DescribeRequest, context: Context) -> pb.DescribeResponse:
        card = card_to_proto(
            self.agent,
            run_ids=self.ledger is not None,
            tool_admin=self.tool_admin is not None and self.security is not None,
            tokens_required=self.security is not None and bool(self.security.tokens),
        )
        return pb.DescribeResponse(card=card)

    @translate_errors
    async def Run(self, request: pb.RunRequest, context: Context) -> pb.RunResponse:
        ctx = self._context(request, context)
        self._observe(ctx, None)
        with self.runs.register(ctx):
            if (recorded := await self._claim(request, unary=True)) is not None:
                return pb.RunResponse.FromString(recorded)  # a retry: it is not run again
            async with self._recording(request.run_id) as record:
                result: RunResult = await self._in_thread(ctx, lambda: self.agent.run(
                    request.task, max_steps=request.max_steps or None, return_full_result=True,
                    context=ctx))  # fmt: skip
                response = run_response(result)
                record(response.SerializeToString())
        return response

    @translate_errors
    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.RunStreamResponse]:
        ctx = self._context(request, context)
        with self.runs.register(ctx):
            await self._claim(request, unary=False)
            async with (
                self._recording(request.run_id),
                aclosing(self._stream(ctx, request.task, request.max_steps or None)) as batches,
            ):  # closed here, whatever ends the call: the run stops before its slot is freed
                async for batch in batches:
                    yield pb.RunStreamResponse(events=[event_to_proto(event) for event in batch])

    @translate_errors
    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.CancelResponse:
        self.runs.cancel(check_identifier(request.run_id, "run_id"))
        return pb.CancelResponse(cancelled=True)

    @translate_errors
    async def ListTools(
        self, request: pb.ListToolsRequest, context: Context
    ) -> pb.ListToolsResponse:
        tools = [t for name, t in self.agent.tools.items() if name != FINAL_ANSWER]
        return pb.ListToolsResponse(tools=[tool_spec_to_proto(t) for t in tools])

    @translate_errors
    async def CallTool(self, request: pb.CallToolRequest, context: Context) -> pb.CallToolResponse:
        tools = {name: t for name, t in self.agent.tools.items() if name != FINAL_ANSWER}
        if request.name not in tools:
            raise NotFoundError(f"{self.agent.name} has no tool {clip(request.name, 80)!r} "
                                f"(it has {', '.join(tools)})")  # fmt: skip
        try:
            arguments = untrusted_json.loads(request.arguments_json or "{}")
        except ValueError as err:
            raise InvalidRequestError(f"arguments_json is not JSON: {err}") from err
        if not isinstance(arguments, dict):
            raise InvalidRequestError("arguments_json must be a JSON object")
        ctx = RunContext(agent=self.agent.name, deadline=_deadline(context))
        ctx.run_id = f"call-{ctx.run_id}"
        self._observe(ctx, None)  # audited like a call from a step
        record = await self._in_thread(
            ctx, lambda: call_directly(ctx, tools, request.name, arguments)
        )
        if record.exception is not None:
            raise record.exception
        return pb.CallToolResponse(
            result_json=to_json(record.result), result_text=answer_text(record.result)
        )

    @translate_errors
    async def AddTool(self, request: pb.AddToolRequest, context: Context) -> pb.AddToolResponse:
        admin, caller = self._admin(context)
        try:
            definition = tool_spec_from_proto(request.spec)
        except ValueError as err:
            raise InvalidRequestError(f"invalid tool spec: {err}") from err
        change = admin.add(definition, request.address, caller=caller,
                           remote_name=request.remote_name, replace=request.replace)  # fmt: skip
        return pb.AddToolResponse(change=tool_change_to_proto(change))

    @translate_errors
    async def RemoveTool(
        self, request: pb.RemoveToolRequest, context: Context
    ) -> pb.RemoveToolResponse:
        admin, caller = self._admin(context)
        change = admin.remove(request.name, caller=caller)
        return pb.RemoveToolResponse(change=tool_change_to_proto(change))

    @translate_errors
    async def ToolHistory(
        self, request: pb.ToolHistoryRequest, context: Context
    ) -> pb.ToolHistoryResponse:
        changes = self.tool_admin.history() if self.tool_admin is not None else []
        return pb.ToolHistoryResponse(changes=[tool_change_to_proto(c) for c in changes])

    def shutdown(self) -> None:
        """Cancel every run still going (their jails die with them)."""
        self.runs.cancel_all()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _claim(
        self, request: pb.RunRequest | pb.RunStreamRequest, *, unary: bool
    ) -> bytes | None:
        """Claim a caller's run id (see ``run_ledger``); a finished unary run's response.
        The ledger's SQLite waits for the disk: it runs off the event loop."""
        if not request.run_id or self.ledger is None:
            return None
        return await asyncio.to_thread(self.ledger.start, request.run_id, request.task,
                                       unary=unary)  # fmt: skip

    @asynccontextmanager
    async def _recording(self, run_id: str) -> AsyncIterator[Callable[[bytes], None]]:
        """Around a claimed run: its end in the ledger, with the response given to the
        callback or the error. The write runs to its end even if this call is cancelled."""
        if not run_id or self.ledger is None:
            yield lambda response: None
            return
        response: list[bytes] = []
        try:
            yield response.append
        except BaseException as err:
            await asyncio.to_thread(self.ledger.finish, run_id, error=describe_error(err))
            raise
        await asyncio.to_thread(self.ledger.finish, run_id,
                                response=response[0] if response else None)  # fmt: skip

    def _admin(self, context: Context) -> tuple[ToolAdmin, str]:
        """The tool admin, and the authenticated caller (the interceptor checked its rights)."""
        caller = self.security.caller(context.invocation_metadata()) if self.security else None
        if caller is None:
            raise PermissionDeniedError(
                "changing tools needs an authenticated admin: give the mesh [auth] tokens_file "
                'and grant a caller "admin" in [auth.permissions]'
            )
        if self.tool_admin is None:
            raise PermissionDeniedError(f"{self.agent.name} does not allow tool changes")
        return self.tool_admin, caller

    def _context(
        self, request: pb.RunRequest | pb.RunStreamRequest, context: Context
    ) -> RunContext:
        if request.agent and request.agent != self.agent.name:
            raise NotFoundError(
                f"this server hosts {self.agent.name!r}, not {request.agent!r}: check the address"
            )
        if not request.task.strip():
            raise InvalidRequestError("task must be a non-empty string")
        if len(request.task) > MAX_TASK_CHARS:
            raise InvalidRequestError(f"task is longer than {MAX_TASK_CHARS} characters")
        if request.max_steps < 0:
            raise InvalidRequestError("max_steps must be >= 0")
        check_identifier(request.run_id, "run_id")
        check_identifier(request.parent_run_id, "parent_run_id")
        ctx = RunContext(
            agent=self.agent.name,
            remote_parent_id=request.parent_run_id or None,
            deadline=_deadline(context),
        )
        if request.run_id:
            ctx.run_id = request.run_id
        if request.HasField("budget"):
            ctx.budget = budget_from_proto(request.budget)
        return ctx

    def _observe(self, ctx: RunContext, forward: Callable[[AgentEvent], None] | None) -> None:
        """Send the run's events to the audit log (if any), then to ``forward``."""
        audit = self.audit

        def sink(event: AgentEvent) -> None:
            if audit is not None:
                audit.record(event)
            if forward is not None:
                forward(event)

        ctx.sink = sink

    async def _in_thread(self, ctx: RunContext, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._threads, contextvars.copy_context().run, work)
        finally:
            ctx.cancel()  # no-op once the run is over; stops it if the client went away

    async def _stream(
        self, ctx: RunContext, task: str, max_steps: int | None
    ) -> AsyncGenerator[list[AgentEvent], None]:
        """The run's events, in batches of whatever arrived since the last one was sent."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()

        def forward(event: AgentEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        self._observe(ctx, forward)

        def produce() -> None:  # one thread per run; its events go straight to the loop
            try:
                self.agent.run(task, max_steps=max_steps, context=ctx)
            except BaseException as err:
                loop.call_soon_threadsafe(events.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(events.put_nowait, _END)

        # The run's spans belong under this call's server span: carry the context across.
        loop.run_in_executor(self._threads, contextvars.copy_context().run, produce)
        try:
            done = False
            while not done:
                batch: list[AgentEvent] = []
                item = await events.get()
                while True:
                    if item is _END:
                        done = True
                        break
                    if isinstance(item, BaseException):
                        if batch:  # e.g. the failed run's last events, with its usage
                            yield batch
                        raise item
                    batch.append(item)
                    if events.empty():
                        break
                    item = events.get_nowait()
                if batch:
                    yield batch
        finally:
            ctx.cancel()


def _deadline(context: Context) -> float | None:
    """The caller's deadline as a ``time.monotonic()`` instant (None: it gave none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def run_response(result: RunResult) -> pb.RunResponse:
    return pb.RunResponse(
        run_id=result.run_id,
        answer_json=to_json(result.output),
        answer_text=answer_text(result.output),
        state=pb.RUN_STATE_SUCCESS if result.state == "success" else pb.RUN_STATE_MAX_STEPS,
        steps=len(result.steps),
        usage=usage_to_proto(result.usage),
        duration=duration_to_proto(result.duration_s),
        usage_by_agent={n: agent_usage_to_proto(u) for n, u in result.usage_by_agent.items()},
    )
