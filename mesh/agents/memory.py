"""What a run remembers: its task, the conversation before it, and each step, in full.

Each step keeps the exact model input and output, the code or tool calls,
observations, errors, timings and token usage: enough to rebuild the
conversation, audit the run, or explain a bill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mesh.agents.conversation import Turn
from mesh.agents.usage import AgentUsage
from mesh.errors import ErrorInfo, MeshError
from mesh.models.base import ChatMessage, TokenUsage

__all__ = ["ActionStep", "AgentMemory", "ToolCallRecord"]


@dataclass
class ToolCallRecord:
    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None
    duration_s: float = 0.0
    exception: MeshError | None = field(default=None, repr=False, compare=False)

    @property
    def observation(self) -> str:
        return f"Error: {self.error}" if self.error is not None else _text(self.result)

    @property
    def error_info(self) -> ErrorInfo | None:
        """The error as data, for events; ``error`` is the text the model reads. A call
        ended by something other than a MeshError (a bug) is ``internal``."""
        if self.error is None:
            return None
        if self.exception is not None:
            return ErrorInfo.of(self.exception)
        return ErrorInfo("internal", self.error)


@dataclass
class ActionStep:
    step_number: int
    start_time: float
    end_time: float | None = None
    model_input: list[ChatMessage] = field(default_factory=list)
    model_output: ChatMessage | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = 0.0
    code: str | None = None
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    observation: str | None = None
    error: str | None = None
    """What the model reads about the step's failure (set with ``fail``)."""
    error_info: ErrorInfo | None = None
    """The same failure as data, for events and spans."""
    is_final: bool = False
    final_answer: Any = None

    @property
    def duration_s(self) -> float:
        return 0.0 if self.end_time is None else self.end_time - self.start_time

    def fail(self, error: ErrorInfo) -> None:
        """The step failed with ``error``; the model reads its message."""
        self.error, self.error_info = error.message, error


@dataclass
class AgentMemory:
    system_prompt: str
    task: str
    steps: list[ActionStep] = field(default_factory=list)
    history: list[Turn] = field(default_factory=list)
    """The earlier turns of the conversation the model read before the task (see
    ``conversation``)."""
    turn: Turn | None = None
    """This run as a turn, once it ended with an answer: what a later run continues from."""

    @property
    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for step in self.steps:
            total = total + step.usage
        return total

    @property
    def agent_usage(self) -> AgentUsage:
        """This run's own model calls, tokens and cost (None if a price was unknown)."""
        calls = [step for step in self.steps if step.model_output is not None]
        costs = [step.cost_usd for step in calls]
        cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
        return AgentUsage(self.usage, cost, len(calls))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)
