"""Step events: what a run reports as it happens.

``agent.run(task, stream=True)`` yields these; a delegated run's events are
relayed into its parent's stream with ``depth`` + 1 and ``parent_run_id``
set, so one stream shows the whole delegation tree. Later the gRPC layer
converts them to ``smolmesh.v1`` messages at its edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mesh.agents.usage import AgentUsage
from mesh.errors import ErrorInfo
from mesh.models.base import ChatMessage, TokenUsage, ToolCall

__all__ = [
    "AgentEvent",
    "CodeAction",
    "FinalAnswer",
    "InputRequested",
    "ModelOutput",
    "ModelOutputDelta",
    "Observation",
    "Planning",
    "RunFinished",
    "RunStarted",
    "StepFailed",
    "ToolCallFinished",
    "ToolCallStarted",
]


@dataclass(frozen=True, kw_only=True)
class AgentEvent:
    agent: str
    run_id: str
    parent_run_id: str | None = None
    depth: int = 0
    step: int = 0
    timestamp: float = 0.0
    wire: object = field(default=None, compare=False, repr=False)
    """The message a relayed event arrived as (from a delegate's stream), for a service
    to send on as it is, but for its depth, instead of encoding the event again."""


@dataclass(frozen=True, kw_only=True)
class RunStarted(AgentEvent):
    task: str
    trace_id: str = ""
    """The run's trace (W3C id, 32 hex digits; empty when nothing is traced)."""


@dataclass(frozen=True, kw_only=True)
class ModelOutput(AgentEvent):
    """One model call. ``prompt`` (the messages sent) stays in process, for the audit
    log: it is not sent over the wire. Its first ``prompt_kept`` messages are those the
    run's previous call sent too: records keep only the rest, and grow with a run's steps,
    not their square."""

    text: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: TokenUsage = field(default_factory=TokenUsage)
    model_id: str = ""
    duration_s: float = 0.0
    prompt: tuple[ChatMessage, ...] = field(default=(), repr=False)
    prompt_kept: int = 0
    cached: bool = False


@dataclass(frozen=True, kw_only=True)
class ModelOutputDelta(AgentEvent):
    """A piece of a model answer as it is generated (``stream_outputs``): the pieces of
    one call, joined, are its text; its ``ModelOutput`` (or ``Planning``, when
    ``planning``) follows with the whole answer and its usage. Live only: a run's
    record does not keep them."""

    text: str
    planning: bool = False


@dataclass(frozen=True, kw_only=True)
class Planning(AgentEvent):
    """A plan the agent wrote (``initial``) or updated, before action step ``step``, in a
    model call of its own. ``prompt`` stays in process, for the audit log, as in
    ``ModelOutput``."""

    plan: str
    initial: bool = True
    usage: TokenUsage = field(default_factory=TokenUsage)
    model_id: str = ""
    duration_s: float = 0.0
    prompt: tuple[ChatMessage, ...] = field(default=(), repr=False)


@dataclass(frozen=True, kw_only=True)
class CodeAction(AgentEvent):
    code: str


@dataclass(frozen=True, kw_only=True)
class ToolCallStarted(AgentEvent):
    """Reported for every call before it runs, with its arguments bound to the
    tool's inputs (as written when they cannot be: an unknown tool, unreadable
    arguments). Its ToolCallFinished follows exactly once, with the outcome."""

    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ToolCallFinished(AgentEvent):
    call_id: str
    name: str
    result: str
    error: ErrorInfo | None = None
    """Why the call failed (None if it did not); ``result`` holds what the model read."""
    duration_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Observation(AgentEvent):
    text: str


@dataclass(frozen=True, kw_only=True)
class StepFailed(AgentEvent):
    """An error the model will see as an observation; the run goes on. ``error.message``
    is what the model reads."""

    error: ErrorInfo


@dataclass(frozen=True, kw_only=True)
class InputRequested(AgentEvent):
    """The run asks its caller a question (``user_input``) and waits for the answer, which
    the call's ``ToolCallFinished`` then carries."""

    question: str


@dataclass(frozen=True, kw_only=True)
class FinalAnswer(AgentEvent):
    answer: Any


@dataclass(frozen=True, kw_only=True)
class RunFinished(AgentEvent):
    usage: TokenUsage
    duration_s: float
    steps: int
    error: ErrorInfo | None = None
    """Why the run failed; None if it gave an answer."""
    usage_by_agent: dict[str, AgentUsage] = field(default_factory=dict)
    """This run's usage and that of every run beneath it, by agent."""
