"""``AgentClient``: the one typed client of ``smolmesh.v1.AgentService``.

Everything that calls an agent's service goes through it: ``RemoteAgent``
and ``RemoteTool``, the ``mesh`` command, the launcher's health checks, the
benches. It speaks domain types only (cards, events, run records, tool
changes; never a protobuf), and does what each caller used to do by hand:
it opens the channel (TLS when the mesh uses it), sends the mesh's bearer
token, takes a timeout per call, puts W3C trace context in the call's
metadata under a CLIENT span, and turns a failed call back into the
``MeshError`` the server raised (same class, reason and retryable flag).

It is synchronous (agents run in threads; the command is synchronous) and
never retries on its own: whether a call may be made again is the caller's
decision (``RemoteAgent`` knows when a run never started). Streams (a run's,
a watched run's) are ``EventStream`` objects: iterate them for the events,
``cancel()`` them from any thread.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.budget import Budget
from mesh.agents.run_args import checked_args
from mesh.agents.usage import AgentUsage
from mesh.errors import (
    AgentUnavailableError,
    MeshError,
    RemoteAgentError,
    RunCancelledError,
    ToolDefinitionError,
)
from mesh.host.run_record import RunFilter, RunRecord, RunStatus
from mesh.host.sessions import SessionInfo, SessionTurn
from mesh.models.base import TokenUsage
from mesh.models.images import ImageSource, checked_images
from mesh.rpc.convert import (
    SERVICE_NAME,
    agent_usage_from_proto,
    budget_to_proto,
    definition_to_proto,
    duration_to_proto,
    from_json,
    images_to_proto,
    seconds_from_proto,
    to_json,
    tool_change_from_proto,
    tool_spec_from_proto,
    usage_from_proto,
)
from mesh.rpc.convert_runs import (
    run_filter_to_proto,
    run_record_from_proto,
    run_status_from_proto,
    session_from_proto,
    turn_from_proto,
)
from mesh.rpc.event_stream import EventStream
from mesh.rpc.security import MeshSecurity, open_channel
from mesh.rpc.status import error_from_rpc
from mesh.rpc.tool_change import ToolChange
from mesh.run_scope import RunScope
from mesh.telemetry.spans import record_error, tracer

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AgentCard",
    "AgentClient",
    "Capabilities",
    "EventStream",
    "RunOutcome",
    "channel_target",
]

DEFAULT_TIMEOUT_S = 30.0
"""The timeout of a call that is not a run (describe, tools, records, sessions)."""


@dataclass(frozen=True)
class Capabilities:
    """What an agent's service supports (see ``Capabilities`` in protos/)."""

    streaming: bool = False
    cancellation: bool = False
    run_ids: bool = False
    tool_admin: bool = False
    tokens_required: bool = False
    run_records: bool = False
    sessions: bool = False


@dataclass(frozen=True)
class AgentCard:
    name: str
    description: str
    kind: str
    """``code`` or ``tool-calling`` (empty when the service does not say)."""
    model_id: str
    tools: tuple[dict[str, Any], ...] = ()
    """Each tool's definition: name, description, inputs and output_type, as a Tool has them."""
    managed_agents: tuple[str, ...] = ()
    version: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)


@dataclass(frozen=True)
class RunOutcome:
    """What ``run`` returns: a run that ended with an answer."""

    run_id: str
    answer: Any
    answer_text: str
    status: RunStatus
    """``succeeded``, or ``max_steps`` (the answer is the model's best effort)."""
    steps: int
    usage: TokenUsage
    duration_s: float
    usage_by_agent: dict[str, AgentUsage] = field(default_factory=dict)
    """This run's usage and that of every agent it delegated to, however deep."""


class AgentClient:
    """A connection to one agent's service (several replicas are balanced round robin).

    ``agent``: the agent expected there; runs ask the server to check it (NOT_FOUND from a
    server that hosts another), and errors name it (``label`` names the service otherwise).
    ``with AgentClient(...) as client:`` closes the channel at the end.
    """

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        agent: str = "",
        security: MeshSecurity | None = None,
        label: str = "",
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.agent = agent
        self.target = channel_target(addresses)
        self.who = label or (f"{agent} at {self.target}" if agent else self.target)
        """How errors name the service: ``manager at 127.0.0.1:50051``."""
        self._credentials = security.call_metadata() if security is not None else ()
        self._channel = open_channel(self.target, security, options=[
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.enable_retries", 0),  # retrying is the caller's decision (see the docstring)
            # A stream is read on its caller's thread; else each call starts a polling thread.
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
            *options,
        ])  # fmt: skip
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # The agent --------------------------------------------------------------------------

    def describe(self, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> AgentCard:
        response = self._unary("Describe", pb.DescribeRequest(), timeout_s)
        return _card_from_proto(response.card, self.who)

    def health(self, *, timeout_s: float | None = 5.0, wait_for_ready: bool = False) -> bool:
        """Whether the service reports SERVING on grpc.health.v1 (no token, no span: this is
        what probes call)."""
        try:
            request = health_pb2.HealthCheckRequest(service="")
            reply = self._health.Check(request, timeout=timeout_s, wait_for_ready=wait_for_ready)
        except grpc.RpcError as err:
            raise error_from_rpc(err, self.who) from err
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Block until the service reports SERVING; ``AgentUnavailableError`` after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.health(timeout_s=max(0.1, deadline - time.monotonic()),
                               wait_for_ready=True):  # fmt: skip
                    return
            except MeshError as err:
                if time.monotonic() >= deadline:
                    raise AgentUnavailableError(f"{self.who} is not healthy: {err}") from err
            if time.monotonic() >= deadline:
                raise AgentUnavailableError(f"{self.who} did not become healthy")
            time.sleep(0.05)

    # Runs -------------------------------------------------------------------------------

    def run(
        self,
        task: str,
        *,
        max_steps: int = 0,
        run_id: str = "",
        parent_run_id: str = "",
        budget: Budget | None = None,
        session_id: str = "",
        timeout_s: float | None = None,
        additional_args: Mapping[str, Any] | None = None,
        images: Sequence[ImageSource] | None = None,
    ) -> RunOutcome:
        """Run ``task`` to its end. ``run_id`` (optional) is an idempotency key: running
        again with a finished run's id returns its recorded outcome."""
        fields = self._run_fields(task, max_steps, run_id, parent_run_id, budget, session_id,
                                  additional_args, images)  # fmt: skip
        request = pb.RunRequest(**fields)
        response: pb.RunResponse = self._unary("Run", request, timeout_s)
        return RunOutcome(
            run_id=response.run_id, answer=from_json(response.answer_json),
            answer_text=response.answer_text, status=run_status_from_proto(response.state),
            steps=response.steps, usage=usage_from_proto(response.usage),
            duration_s=seconds_from_proto(response.duration),
            usage_by_agent={n: agent_usage_from_proto(u)
                            for n, u in response.usage_by_agent.items()},
        )  # fmt: skip

    def run_stream(
        self,
        task: str,
        *,
        max_steps: int = 0,
        run_id: str = "",
        parent_run_id: str = "",
        budget: Budget | None = None,
        session_id: str = "",
        timeout_s: float | None = None,
        depth_offset: int = 0,
        scope: RunScope | None = None,
        additional_args: Mapping[str, Any] | None = None,
        images: Sequence[ImageSource] | None = None,
    ) -> EventStream:
        """Run ``task``, streaming its events and those of the runs it delegates.

        Cancelling the stream (``cancel()``, or ``scope`` being cancelled) cancels the run.
        ``depth_offset`` is added to every event's depth (a relay one level deeper).
        """
        fields = self._run_fields(task, max_steps, run_id, parent_run_id, budget, session_id,
                                  additional_args, images)  # fmt: skip
        request = pb.RunStreamRequest(**fields)
        return self._stream("RunStream", request, timeout_s, depth_offset, scope)

    def cancel(
        self, run_id: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S
    ) -> tuple[bool, RunStatus | None]:
        """Cancel a run and the runs it delegated: (whether there was something to cancel,
        the run's state when the service says; None when it does not)."""
        response = self._unary("Cancel", pb.CancelRequest(run_id=run_id), timeout_s)
        state = response.state
        return response.cancelled, None if not state else run_status_from_proto(state)

    def start_run(
        self,
        task: str,
        *,
        max_steps: int = 0,
        run_id: str = "",
        parent_run_id: str = "",
        budget: Budget | None = None,
        session_id: str = "",
        run_timeout_s: float | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        additional_args: Mapping[str, Any] | None = None,
        images: Sequence[ImageSource] | None = None,
    ) -> tuple[RunRecord, bool]:
        """Start a run in the background: (its record, whether ``run_id`` had started it
        already). ``run_timeout_s`` bounds the run; ``timeout_s`` only this call."""
        fields = self._run_fields(task, max_steps, run_id, parent_run_id, budget, session_id,
                                  additional_args, images)  # fmt: skip
        request = pb.StartRunRequest(**fields)
        if run_timeout_s is not None:
            request.timeout.CopyFrom(duration_to_proto(run_timeout_s))
        response = self._unary("StartRun", request, timeout_s)
        return run_record_from_proto(response.run), response.already_started

    def get_run(self, run_id: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> RunRecord:
        response = self._unary("GetRun", pb.GetRunRequest(run_id=run_id), timeout_s)
        return run_record_from_proto(response.run)

    def list_runs(
        self,
        where: RunFilter | None = None,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> tuple[list[RunRecord], str]:
        """One page of runs, newest first, and the token of the next page ("" on the last)."""
        request = pb.ListRunsRequest(page_size=page_size, page_token=page_token)
        if where is not None:
            run_filter_to_proto(where, request)
        response = self._unary("ListRuns", request, timeout_s)
        return [run_record_from_proto(r) for r in response.runs], response.next_page_token

    def watch_run(
        self,
        run_id: str,
        start_index: int = 0,
        *,
        timeout_s: float | None = None,
        depth_offset: int = 0,
        scope: RunScope | None = None,
    ) -> EventStream:
        """A run's events from ``start_index`` (recorded ones, then live ones) until it ends.
        Cancelling the stream ends the watch, not the run (``cancel(run_id)`` does that)."""
        request = pb.WatchRunRequest(run_id=run_id, start_index=start_index)
        return self._stream("WatchRun", request, timeout_s, depth_offset, scope)

    # Sessions ---------------------------------------------------------------------------

    def list_sessions(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> tuple[list[SessionInfo], str]:
        """One page of sessions, most recently used first, and the next page's token."""
        request = pb.ListSessionsRequest(page_size=page_size, page_token=page_token)
        response = self._unary("ListSessions", request, timeout_s)
        return [session_from_proto(s) for s in response.sessions], response.next_page_token

    def get_session(
        self, session_id: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S
    ) -> tuple[SessionInfo, list[SessionTurn]]:
        """A session and its turns, oldest first."""
        request = pb.GetSessionRequest(session_id=session_id)
        response = self._unary("GetSession", request, timeout_s)
        return session_from_proto(response.session), [turn_from_proto(t) for t in response.turns]

    def delete_session(
        self, session_id: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S
    ) -> None:
        self._unary("DeleteSession", pb.DeleteSessionRequest(session_id=session_id), timeout_s)

    # Tools ------------------------------------------------------------------------------

    def list_tools(
        self, *, timeout_s: float | None = DEFAULT_TIMEOUT_S, wait_for_ready: bool = False
    ) -> list[dict[str, Any]]:
        """The agent's tools, as definitions (name, description, inputs, output_type).
        ``wait_for_ready``: wait (within the timeout) for a service still starting."""
        response = self._unary("ListTools", pb.ListToolsRequest(), timeout_s,
                               wait_for_ready=wait_for_ready)  # fmt: skip
        return [_definition(spec, self.who) for spec in response.tools]

    def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        scope: RunScope | None = None,
    ) -> Any:
        """Call one of the agent's tools; its result. Cancelling ``scope`` cancels the call
        (``RunCancelledError``)."""
        request = pb.CallToolRequest(name=name, arguments_json=to_json(dict(arguments)))
        response = self._unary("CallTool", request, timeout_s, scope=scope)
        try:
            return from_json(response.result_json)
        except ValueError as err:
            raise RemoteAgentError(f"{self.who}: tool {name!r} answered invalid JSON") from err

    def add_tool(
        self,
        definition: Mapping[str, Any],
        address: str,
        *,
        remote_name: str = "",
        replace: bool = False,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> ToolChange:
        """Give the agent a tool that runs at ``address`` (``CallTool`` of that service, where
        it is called ``remote_name``, by default its name); the change as the log recorded it.
        Raises ``ToolDefinitionError`` for an ill-formed definition."""
        try:
            spec = definition_to_proto(definition)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ToolDefinitionError(f"ill-formed tool definition: {err!r}") from err
        request = pb.AddToolRequest(spec=spec, address=address, remote_name=remote_name,
                                    replace=replace)  # fmt: skip
        return tool_change_from_proto(self._unary("AddTool", request, timeout_s).change)

    def remove_tool(self, name: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> ToolChange:
        response = self._unary("RemoveTool", pb.RemoveToolRequest(name=name), timeout_s)
        return tool_change_from_proto(response.change)

    def tool_history(self, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> list[ToolChange]:
        """Every change made to the agent's definition and tools, oldest first."""
        response = self._unary("ToolHistory", pb.ToolHistoryRequest(), timeout_s)
        return [tool_change_from_proto(change) for change in response.changes]

    # ------------------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AgentClient {self.who}>"

    def _run_fields(
        self,
        task: str,
        max_steps: int,
        run_id: str,
        parent_run_id: str,
        budget: Budget | None,
        session_id: str,
        additional_args: Mapping[str, Any] | None,
        images: Sequence[ImageSource] | None = None,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"task": task, "max_steps": max_steps, "run_id": run_id,
                                  "parent_run_id": parent_run_id, "agent": self.agent,
                                  "session_id": session_id}  # fmt: skip
        if additional_args:  # checked here too: a bad one fails before it travels
            fields["additional_args_json"] = json.dumps(checked_args(additional_args))
        if images:  # likewise: loaded and checked here, typed parts on the wire
            fields["images"] = images_to_proto(checked_images(images))
        if budget is not None:
            fields["budget"] = budget_to_proto(budget)
        return fields

    def _unary(
        self,
        method: str,
        request: Any,
        timeout_s: float | None,
        *,
        wait_for_ready: bool | None = None,
        scope: RunScope | None = None,
    ) -> Any:
        rpc = getattr(self._stub, method)
        with self._span(method) as span:
            metadata = self._metadata(span)
            try:
                if scope is None:
                    return rpc(request, timeout=timeout_s, metadata=metadata,
                               wait_for_ready=wait_for_ready)  # fmt: skip
                call = rpc.future(request, timeout=timeout_s, metadata=metadata,
                                  wait_for_ready=wait_for_ready)  # fmt: skip
                forget = scope.on_cancel(call.cancel)
                try:
                    return call.result()
                finally:
                    forget()
            except grpc.FutureCancelledError as err:
                error: MeshError = RunCancelledError(f"{self.who}: the call was cancelled")
                record_error(span, error.message)
                raise error from err
            except grpc.RpcError as err:
                error = error_from_rpc(err, self.who)
                record_error(span, error.message)
                raise error from err

    def _stream(
        self,
        method: str,
        request: Any,
        timeout_s: float | None,
        depth_offset: int,
        scope: RunScope | None,
    ) -> EventStream:
        # The span is started here and ended by the stream: the OpenTelemetry client
        # interceptor wraps a stream in a generator that cannot be cancelled.
        span = tracer.start_span(f"{SERVICE_NAME}/{method}", kind=SpanKind.CLIENT,
                                 attributes=self._attributes(method))  # fmt: skip
        try:
            call = getattr(self._stub, method)(request, timeout=timeout_s,
                                               metadata=self._metadata(span))  # fmt: skip
        except BaseException:
            span.end()
            raise
        return EventStream(call, self.who, span, depth_offset, scope)

    @contextmanager
    def _span(self, method: str) -> Iterator[Span]:
        with tracer.start_as_current_span(
            f"{SERVICE_NAME}/{method}", kind=SpanKind.CLIENT, attributes=self._attributes(method),
            record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            yield span

    def _attributes(self, method: str) -> dict[str, str]:
        return {"rpc.system": "grpc", "rpc.service": SERVICE_NAME, "rpc.method": method,
                "server.address": self.target}  # fmt: skip

    def _metadata(self, span: Span) -> tuple[tuple[str, str], ...]:
        """The call's metadata: W3C trace context (the server span joins ``span``'s trace)
        and the mesh's token."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return (*carrier.items(), *self._credentials)


def _card_from_proto(card: pb.AgentCard, who: str) -> AgentCard:
    kind = "" if not card.kind else pb.AgentKind.Name(card.kind).removeprefix("AGENT_KIND_")
    c = card.capabilities
    return AgentCard(
        name=card.name, description=card.description, kind=kind.lower().replace("_", "-"),
        model_id=card.model_id, tools=tuple(_definition(spec, who) for spec in card.tools),
        managed_agents=tuple(card.managed_agents), version=card.version,
        capabilities=Capabilities(
            streaming=c.streaming, cancellation=c.cancellation, run_ids=c.run_ids,
            tool_admin=c.tool_admin, tokens_required=c.tokens_required,
            run_records=c.run_records, sessions=c.sessions,
        ),
    )  # fmt: skip


def _definition(spec: pb.ToolSpec, who: str) -> dict[str, Any]:
    try:
        return tool_spec_from_proto(spec)
    except ValueError as err:
        raise RemoteAgentError(f"{who}: tool {spec.name!r} has an unusable schema: {err}") from err


def channel_target(addresses: str | Sequence[str]) -> str:
    """A gRPC target for one address, a DNS name with several records, or a list of IPs."""
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    if not addresses:
        raise ValueError("no address given")
    if len(addresses) == 1:
        host = addresses[0].rsplit(":", 1)[0].strip("[]")
        return addresses[0] if _is_ip(host) else f"dns:///{addresses[0]}"
    if not all(_is_ip(a.rsplit(":", 1)[0].strip("[]")) for a in addresses):
        raise ValueError(f"a list of replicas must be IP:port addresses, got {list(addresses)}")
    scheme = "ipv6" if ":" in addresses[0].rsplit(":", 1)[0] else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
