"""Span names and attributes, following the OpenTelemetry GenAI conventions.

``invoke_agent NAME`` per run, ``agent.step`` per step, ``chat MODEL`` per
model call, ``execute_tool NAME`` per tool call, ``sandbox.exec`` per
snippet, and a SERVER span per call a service answers. One module so that
the names are defined once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from mesh.errors import ErrorInfo
from mesh.models.base import ChatMessage, ModelResponse
from mesh.telemetry.redact import content_mode, shape

__all__ = [
    "agent_span",
    "chat_span",
    "current_trace_id",
    "planning_span",
    "record_error",
    "record_response",
    "record_rpc_status",
    "sandbox_span",
    "server_span",
    "step_span",
    "tool_span",
    "tracer",
]

tracer = trace.get_tracer("mesh")


@contextmanager
def agent_span(agent: str, run_id: str, parent_run_id: str | None) -> Iterator[Span]:
    with tracer.start_as_current_span(f"invoke_agent {agent}", attributes={
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent,
        "gen_ai.agent.id": run_id,
        "mesh.run_id": run_id,
        "mesh.parent_run_id": parent_run_id or "",
    }) as span:  # fmt: skip
        yield span


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits ("" outside any recorded trace)."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""


def step_span(agent: str, number: int) -> AbstractContextManager[Span]:
    return _numbered("agent.step", agent, number)


def planning_span(agent: str, number: int) -> AbstractContextManager[Span]:
    """A plan the agent writes before step ``number`` (its model call is a child span)."""
    return _numbered("agent.plan", agent, number)


def _numbered(name: str, agent: str, number: int) -> AbstractContextManager[Span]:
    return tracer.start_as_current_span(
        name, attributes={"gen_ai.agent.name": agent, "mesh.step": number}
    )


@contextmanager
def chat_span(model_id: str) -> Iterator[Span]:
    provider = model_id.split("/", 1)[0] if "/" in model_id else model_id.split(":", 1)[0]
    with tracer.start_as_current_span(f"chat {model_id}", attributes={
        "gen_ai.operation.name": "chat",
        "gen_ai.system": provider,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model_id,
    }) as span:  # fmt: skip
        yield span


def record_response(
    span: Span, response: ModelResponse, prompt: Sequence[ChatMessage] = (), *, kept: int = 0
) -> None:
    """The call's outcome on its span; ``prompt`` is what is new since the run's previous
    call, which sent the first ``kept`` messages too (each span would repeat them else)."""
    span.set_attributes({
        "gen_ai.response.model": response.model_id,
        "gen_ai.usage.input_tokens": response.usage.input_tokens,
        "gen_ai.usage.output_tokens": response.usage.output_tokens,
        "gen_ai.response.finish_reasons": [response.finish_reason or "unknown"],
        "mesh.cache.hit": response.cached,
    })  # fmt: skip
    # Prompt and output text follow MESH_LOG_CONTENT (full, truncated, off), secrets redacted.
    mode = content_mode()
    if mode != "off":
        messages = [{"role": m.role, "content": shape(m.content, mode)} for m in prompt]
        span.set_attribute("gen_ai.input.messages", json.dumps(messages, ensure_ascii=False))
        span.set_attribute("mesh.input.messages_kept", kept)
        span.set_attribute("gen_ai.output.text", shape(response.message.content, mode) or "")


@contextmanager
def tool_span(name: str, call_id: str) -> Iterator[Span]:
    with tracer.start_as_current_span(f"execute_tool {name}", attributes={
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
    }) as span:  # fmt: skip
        yield span


@contextmanager
def sandbox_span(executor: str, code: str) -> Iterator[Span]:
    with tracer.start_as_current_span(
        "sandbox.exec", attributes={"mesh.sandbox.executor": executor, "mesh.code.size": len(code)}
    ) as span:
        yield span


def record_error(span: Span, error: str | ErrorInfo, **attributes: Any) -> None:
    """Mark ``span`` failed: "reason: message" as its status, the reason as ``error.type``."""
    if isinstance(error, ErrorInfo):
        attributes = {"error.type": error.reason, **attributes}
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
    if attributes:
        span.set_attributes(attributes)


@contextmanager
def server_span(method: str, carrier: Mapping[str, str]) -> Iterator[Span]:
    """The SERVER span of one call of ``method`` ("/package.Service/Method"), under the
    caller's span when ``carrier`` (the call's metadata) holds W3C trace context."""
    service, _, name = method.lstrip("/").partition("/")
    with tracer.start_as_current_span(
        method,
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


_SERVER_FAULTS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


def record_rpc_status(span: Span, code: int, name: str) -> None:
    """A call's status on its server span: an error only for the codes that say the server
    failed (OpenTelemetry's gRPC conventions), not for a caller's bad request or cancel."""
    span.set_attribute("rpc.grpc.status_code", code)
    if name in _SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, name))
