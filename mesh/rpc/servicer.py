"""``AgentServicer``: the smolmesh.v1.AgentService of one agent, only an adapter.

Each method checks what only the wire can get wrong (identifiers, enums, page
tokens), converts the request to the domain, asks the ``ServedAgent`` (which
owns runs, records, sessions, ledger and audit), and converts the answer
back. Errors are mapped to statuses once, where the handlers are registered
(``handlers.add_agent_service``). A run's context carries the client's
deadline; a client that owns a run (Run, RunStream) and goes away, or
Cancel, cancels it (and with it the runs it delegated and their jails).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from mesh import untrusted_json
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.base import RunResult
from mesh.agents.events import (
    AgentEvent,
    FinalAnswer,
    InputRequested,
    ModelOutputDelta,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from mesh.agents.run_args import args_from_json
from mesh.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from mesh.host.run_record import RunRecord
from mesh.host.run_store import Keep
from mesh.host.served_agent import RunOrder, ServedAgent
from mesh.host.sessions import Sessions
from mesh.rpc.convert import (
    agent_usage_to_proto,
    answer_text,
    budget_from_proto,
    card_to_proto,
    duration_to_proto,
    event_to_proto,
    images_from_proto,
    seconds_from_proto,
    to_json,
    tool_change_to_proto,
    tool_spec_from_proto,
    tool_spec_to_proto,
    usage_to_proto,
)
from mesh.rpc.convert_runs import (
    run_filter_from_proto,
    run_record_from_proto,
    run_record_to_proto,
    run_status_to_proto,
    session_to_proto,
    turn_to_proto,
)
from mesh.rpc.identifiers import check_identifier
from mesh.rpc.security import MeshSecurity
from mesh.rpc.tool_admin import ToolAdmin

__all__ = ["AgentServicer", "ProtoCodec"]

Context = grpc.aio.ServicerContext[Any, Any]
RunRequest = pb.RunRequest | pb.RunStreamRequest | pb.StartRunRequest
_STRUCTURAL = (RunStarted, RunFinished, ToolCallStarted, ToolCallFinished, FinalAnswer,
               InputRequested)  # fmt: skip
"""Events a run's record always keeps: a replay still pairs every start with its end."""


def _keep(event: AgentEvent) -> Keep:
    if isinstance(event, _STRUCTURAL):
        return "always"
    return "live" if isinstance(event, ModelOutputDelta) else "bounded"


class ProtoCodec:
    """Events are kept as the wire messages they are sent as: converted once, in the run's
    thread, however many watch them."""

    def event(self, event: AgentEvent) -> tuple[pb.RunEvent, int, Keep]:
        message = event_to_proto(event)
        return message, message.ByteSize(), _keep(event)

    def response(self, result: RunResult) -> bytes:
        return run_response(result).SerializeToString()

    # What the shared database keeps (mesh.host.run_writer.RunBytes): the wire messages.

    def record_bytes(self, record: RunRecord) -> bytes:
        return run_record_to_proto(record).SerializeToString()

    def record_from_bytes(self, data: bytes) -> RunRecord:
        return run_record_from_proto(pb.Run.FromString(data))

    def event_bytes(self, event: pb.RunEvent) -> bytes:
        return event.SerializeToString()

    def event_from_bytes(self, data: bytes) -> pb.RunEvent:
        return pb.RunEvent.FromString(data)


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        served: ServedAgent[pb.RunEvent],
        tool_admin: ToolAdmin | None = None,
        security: MeshSecurity | None = None,
    ) -> None:
        self.served = served
        self.agent = served.agent
        self.tool_admin = tool_admin
        self.security = security

    async def Describe(self, request: pb.DescribeRequest, context: Context) -> pb.DescribeResponse:
        capabilities = pb.Capabilities(
            streaming=True,
            cancellation=True,
            run_ids=self.served.ledger is not None,
            tool_admin=self.tool_admin is not None and self.security is not None,
            tokens_required=self.security is not None and bool(self.security.tokens),
            run_records=True,
            sessions=self.served.sessions is not None,
        )
        return pb.DescribeResponse(card=card_to_proto(self.agent, capabilities))

    async def Run(self, request: pb.RunRequest, context: Context) -> pb.RunResponse:
        outcome = await self.served.run(self._order(request, _deadline(context)))
        if isinstance(outcome, bytes):
            return pb.RunResponse.FromString(outcome)  # a retry: it is not run again
        return run_response(outcome)

    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.RunStreamResponse]:
        launched = await self.served.launch(self._order(request, _deadline(context)))
        try:
            async for batch in self.served.store.watch(launched.record.run_id):
                yield pb.RunStreamResponse(events=_indexed(batch))
            await asyncio.shield(launched.outcome)  # a failed run ends the call with its error
        finally:
            launched.cancel_unless_over()  # the caller went away: the run stops

    async def StartRun(self, request: pb.StartRunRequest, context: Context
                       ) -> pb.StartRunResponse:  # fmt: skip
        timeout = seconds_from_proto(request.timeout) if request.HasField("timeout") else None
        if timeout is not None and timeout <= 0:
            raise InvalidRequestError("timeout must be positive")
        deadline = None if timeout is None else time.monotonic() + timeout
        record, again = await self.served.start(self._order(request, deadline))
        return pb.StartRunResponse(run=run_record_to_proto(record), already_started=again)

    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        record = await self.served.get_run(_required_id(request.run_id, "run_id"))
        return pb.GetRunResponse(run=run_record_to_proto(record))

    async def ListRuns(self, request: pb.ListRunsRequest, context: Context
                       ) -> pb.ListRunsResponse:  # fmt: skip
        check_identifier(request.session_id, "session_id")
        try:
            where = run_filter_from_proto(request)
        except ValueError as err:
            raise InvalidRequestError(f"states: {err}") from err
        runs, token = await self.served.list_runs(where, request.page_size, request.page_token)
        return pb.ListRunsResponse(runs=[run_record_to_proto(r) for r in runs],
                                   next_page_token=token)  # fmt: skip

    async def WatchRun(
        self, request: pb.WatchRunRequest, context: Context
    ) -> AsyncIterator[pb.WatchRunResponse]:
        run_id = _required_id(request.run_id, "run_id")
        async for batch in self.served.watch_run(run_id, request.start_index):
            yield pb.WatchRunResponse(events=_indexed(batch))

    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.CancelResponse:
        cancelled, status = await self.served.cancel(_required_id(request.run_id, "run_id"))
        return pb.CancelResponse(cancelled=cancelled, state=run_status_to_proto(status))

    async def ListSessions(self, request: pb.ListSessionsRequest, context: Context
                           ) -> pb.ListSessionsResponse:  # fmt: skip
        if request.page_size < 0:
            raise InvalidRequestError("page_size must be >= 0")
        sessions, token = await asyncio.to_thread(
            self._sessions().list, request.page_size, request.page_token)  # fmt: skip
        return pb.ListSessionsResponse(sessions=[session_to_proto(s) for s in sessions],
                                       next_page_token=token)  # fmt: skip

    async def GetSession(self, request: pb.GetSessionRequest, context: Context
                         ) -> pb.GetSessionResponse:  # fmt: skip
        session_id = _required_id(request.session_id, "session_id")
        session, turns = await asyncio.to_thread(self._sessions().get, session_id)
        return pb.GetSessionResponse(session=session_to_proto(session),
                                     turns=[turn_to_proto(t) for t in turns])  # fmt: skip

    async def DeleteSession(self, request: pb.DeleteSessionRequest, context: Context
                            ) -> pb.DeleteSessionResponse:  # fmt: skip
        session_id = _required_id(request.session_id, "session_id")
        await asyncio.to_thread(self._sessions().delete, session_id)
        return pb.DeleteSessionResponse()

    async def ListTools(
        self, request: pb.ListToolsRequest, context: Context
    ) -> pb.ListToolsResponse:
        tools = self.served.tools().values()
        return pb.ListToolsResponse(tools=[tool_spec_to_proto(t) for t in tools])

    async def CallTool(self, request: pb.CallToolRequest, context: Context) -> pb.CallToolResponse:
        try:
            arguments = untrusted_json.loads(request.arguments_json or "{}")
        except ValueError as err:
            raise InvalidRequestError(f"arguments_json is not JSON: {err}") from err
        if not isinstance(arguments, dict):
            raise InvalidRequestError("arguments_json must be a JSON object")
        result = await self.served.call_tool(request.name, arguments, _deadline(context))
        return pb.CallToolResponse(result_json=to_json(result), result_text=answer_text(result))

    async def AddTool(self, request: pb.AddToolRequest, context: Context) -> pb.AddToolResponse:
        admin, caller = self._admin(context)
        try:
            definition = tool_spec_from_proto(request.spec)
        except ValueError as err:
            raise InvalidRequestError(f"invalid tool spec: {err}") from err
        add = functools.partial(
            admin.add,
            definition,
            request.address,
            caller=caller,
            remote_name=request.remote_name,
            replace=request.replace,
        )
        change = await asyncio.to_thread(add)  # the change log may wait for the database
        return pb.AddToolResponse(change=tool_change_to_proto(change))

    async def RemoveTool(
        self, request: pb.RemoveToolRequest, context: Context
    ) -> pb.RemoveToolResponse:
        admin, caller = self._admin(context)
        change = await asyncio.to_thread(admin.remove, request.name, caller=caller)
        return pb.RemoveToolResponse(change=tool_change_to_proto(change))

    async def ToolHistory(
        self, request: pb.ToolHistoryRequest, context: Context
    ) -> pb.ToolHistoryResponse:
        admin = self.tool_admin
        changes = await asyncio.to_thread(admin.history) if admin is not None else []
        return pb.ToolHistoryResponse(changes=[tool_change_to_proto(c) for c in changes])

    def _order(self, request: RunRequest, deadline: float | None) -> RunOrder:
        if request.agent and request.agent != self.agent.name:
            raise NotFoundError(
                f"this server hosts {self.agent.name!r}, not {request.agent!r}: check the address"
            )
        return RunOrder(
            task=request.task,
            max_steps=request.max_steps or None,  # 0: the agent's own; < 0 is refused there
            run_id=check_identifier(request.run_id, "run_id"),
            parent_run_id=check_identifier(request.parent_run_id, "parent_run_id"),
            session_id=check_identifier(request.session_id, "session_id"),
            budget=budget_from_proto(request.budget) if request.HasField("budget") else None,
            deadline=deadline,
            additional_args=self._additional_args(request.additional_args_json),
            images=images_from_proto(request.images),  # checked again: the caller may be anyone
        )

    def _additional_args(self, text: str) -> dict[str, Any]:
        """The request's values beside the task (the toolbox is built only when there are)."""
        return args_from_json(text, self.agent.toolbox()) if text else {}

    def _sessions(self) -> Sessions:
        if self.served.sessions is None:
            raise NotFoundError(f"{self.agent.name} keeps no sessions")
        return self.served.sessions

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


def _indexed(batch: list[tuple[int, pb.RunEvent]]) -> list[pb.RunEvent]:
    for index, event in batch:
        event.index = index  # the same every time: the log's position of the event
    return [event for _, event in batch]


def _required_id(value: str, field: str) -> str:
    if not value:
        raise InvalidRequestError(f"{field} is required")
    return check_identifier(value, field)


def _deadline(context: Context) -> float | None:
    """The caller's deadline as a ``time.monotonic()`` instant (None: it gave none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def run_response(result: RunResult) -> pb.RunResponse:
    return pb.RunResponse(
        run_id=result.run_id,
        answer_json=to_json(result.output),
        answer_text=answer_text(result.output),
        state=pb.RUN_STATE_SUCCEEDED if result.state == "success" else pb.RUN_STATE_MAX_STEPS,
        steps=len(result.steps),
        usage=usage_to_proto(result.usage),
        duration=duration_to_proto(result.duration_s),
        usage_by_agent={n: agent_usage_to_proto(u) for n, u in result.usage_by_agent.items()},
    )
