"""What a run remembers: its task and each step, in full.

Each step keeps the exact model input and output, the code or tool calls,
observations, errors, timings and token usage: enough to rebuild the
conversation, audit the run, or explain a bill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mesh.agents.usage import AgentUsage
from mesh.errors import MeshError
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
    is_final: bool = False
    final_answer: Any = None

    @property
    def duration_s(self) -> float:
        return 0.0 if self.end_time is None else self.end_time - self.start_time


@dataclass
class AgentMemory:
    system_prompt: str
    task: str
    steps: list[ActionStep] = field(default_factory=list)

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
