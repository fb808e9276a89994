"""``RemoteAgent``: an agent served elsewhere, used exactly like a local one.

Give it to ``managed_agents=[...]`` and the manager's model calls it by name
with a task. Each call streams the remote run: its events join the caller's
stream one level deeper; the caller's remaining deadline becomes the call's
timeout; cancelling the caller cancels the call, and so the remote run and
its jail. A call is retried when the remote run never started (the agent
was unreachable); once it has, only if the agent is declared idempotent
(``idempotent=True``: running it twice does no harm), since its server may
have died mid-run. Several
addresses (or a DNS name with several records) are balanced round robin.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.context import RunContext, active_run
from mesh.agents.events import FinalAnswer, RunFinished
from mesh.agents.unfinished import Unfinished
from mesh.errors import (
    AgentUnavailableError,
    DeadlineExceededError,
    MeshError,
    RemoteAgentError,
    RunCancelledError,
)
from mesh.rpc.convert import SERVICE_NAME, budget_to_proto, event_from_proto
from mesh.rpc.security import MeshSecurity, open_channel
from mesh.rpc.status import error_from_rpc
from mesh.telemetry.spans import record_error, tracer

__all__ = ["RemoteAgent", "channel_target"]


class RemoteAgent:
    def __init__(
        self,
        name: str,
        addresses: str | Sequence[str],
        description: str = "",
        *,
        timeout_s: float | None = None,
        retries: int = 2,
        retry_delay_s: float = 0.2,
        idempotent: bool = False,
        security: MeshSecurity | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.target = channel_target(addresses)
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.idempotent = idempotent
        """Safe to run twice: retry even a run that started, when its server went away."""
        self.retried_unstarted = 0
        """Calls retried because the remote run never started (always safe)."""
        self.retried_started = 0
        """Calls retried after their run started and its server went away (idempotent only)."""
        self._metadata = security.call_metadata() if security is not None else ()
        self._channel = open_channel(self.target, security, options=[
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.enable_retries", 0),  # retries are ours: only before a run starts
        ])  # fmt: skip
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def describe(self, timeout_s: float = 5.0) -> pb.AgentCard:
        try:
            response: pb.DescribeResponse = self._stub.Describe(
                pb.DescribeRequest(), timeout=timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err, f"{self.name} at {self.target}") from err
        return response.card

    def run(self, task: str) -> Any:
        """Run ``task`` remotely and return the final answer (see the module docstring)."""
        parent = active_run()
        for attempt in range(self.retries + 1):
            started = False
            try:
                return self._run_once(task, parent)
            except _NotStarted as failure:
                error = failure.error
            except AgentUnavailableError as err:  # the run started, then its server went away
                if not self.idempotent:
                    raise
                error, started = err, True
            if attempt == self.retries or (parent is not None and parent.cancelled):
                raise error
            if started:
                self.retried_started += 1
            else:
                self.retried_unstarted += 1
            time.sleep(self.retry_delay_s * 2**attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._channel.close()

    def _run_once(self, task: str, parent: RunContext | None) -> Any:
        # A CLIENT span, and W3C trace context in the call's metadata, done by hand: the
        # OpenTelemetry client interceptor wraps streams in a generator that cannot be cancelled.
        attributes = {"rpc.system": "grpc", "rpc.service": SERVICE_NAME,
                      "rpc.method": "RunStream", "server.address": self.target}  # fmt: skip
        with tracer.start_as_current_span(
            f"{SERVICE_NAME}/RunStream", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                return self._stream(task, parent)
            except MeshError as err:
                record_error(span, err.message)
                raise

    def _stream(self, task: str, parent: RunContext | None) -> Any:
        timeout = self._timeout(parent)
        request = pb.RunStreamRequest(
            task=task, agent=self.name, parent_run_id=parent.run_id if parent else ""
        )
        remaining = parent.remaining_budget() if parent is not None else None
        if remaining is not None:
            request.budget.CopyFrom(budget_to_proto(remaining))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata = (*tuple(carrier.items()), *self._metadata)
        call = self._stub.RunStream(request, timeout=timeout, metadata=metadata)
        forget = parent.on_cancel(call.cancel) if parent is not None else lambda: None
        unfinished = Unfinished()
        try:
            return self._relay(call, parent, unfinished)
        except MeshError as err:
            if parent is not None:  # the runs and calls the stream started end with it
                for event in unfinished.finish(f"{err.code}: {err.message}"):
                    parent.emit(event)
            raise
        finally:
            forget()

    def _relay(self, call: Any, parent: RunContext | None, unfinished: Unfinished) -> Any:
        """The remote run's events into the parent's stream; its final answer."""
        depth = parent.depth + 1 if parent is not None else 0
        answer: Any = None
        started = finished = False
        try:
            for response in call:
                started = True
                for message in response.events:
                    event = event_from_proto(message, depth_offset=depth)
                    if event is None:
                        continue
                    unfinished.track(event)
                    if parent is not None:
                        parent.emit(event)
                    if isinstance(event, FinalAnswer) and message.depth == 0:
                        answer = event.answer
                    if isinstance(event, RunFinished) and message.depth == 0:
                        finished = True
                        if parent is not None:
                            parent.add_usage_below(event.usage_by_agent)
        except grpc.RpcError as err:
            if parent is not None and parent.cancelled:
                raise RunCancelledError(f"the call to {self.name} was cancelled") from err
            error = error_from_rpc(err, f"{self.name} at {self.target}")
            if not started and isinstance(error, AgentUnavailableError):
                raise _NotStarted(error) from err
            raise error from err
        if not finished:
            raise RemoteAgentError(
                f"{self.name} at {self.target} ended its stream before the run finished"
            )
        return answer

    def _timeout(self, parent: RunContext | None) -> float | None:
        remaining = parent.remaining() if parent is not None else None
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError(f"no time left to delegate to {self.name}")
        if remaining is None:
            return self.timeout_s
        return remaining if self.timeout_s is None else min(remaining, self.timeout_s)

    def __repr__(self) -> str:
        return f"<RemoteAgent {self.name!r} at {self.target}>"


class _NotStarted(Exception):
    """The remote run never started, so trying again is safe."""

    def __init__(self, error: AgentUnavailableError) -> None:
        self.error = error


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
