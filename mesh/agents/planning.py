"""Planning (smolagents' ``planning_interval``): a plan before the first step, and an
updated one every N steps, each written by the model in a call of its own.

A plan enters the run's memory (``AgentMemory.plans``), its stream (a ``Planning`` event)
and its trace (an ``agent.plan`` span around the model call); its tokens count in the run's
usage and budget. The model then reads it among its steps, where it was made: the plan as
its own words, then "Now proceed and carry out this plan." The first plan is asked for with
the task alone; an update reads the run so far (what the next step would read) followed by
the update prompt. Both prompts are templates in ``prompts/`` (``planning_*.j2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.agents.prompts import render_prompt
from mesh.models.base import ChatMessage, TokenUsage
from mesh.models.images import Image

__all__ = ["PLAN_END", "PlanningStep", "due", "plan_request", "plan_text"]

PLAN_END = "<end_plan>"
PROCEED = "Now proceed and carry out this plan."


@dataclass
class PlanningStep:
    """One plan: made before action step ``step_number``."""

    step_number: int
    start_time: float
    initial: bool
    end_time: float | None = None
    model_input: list[ChatMessage] = field(default_factory=list)
    model_output: ChatMessage | None = None
    plan: str = ""
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = 0.0

    @property
    def duration_s(self) -> float:
        return 0.0 if self.end_time is None else self.end_time - self.start_time

    def to_messages(self) -> list[ChatMessage]:
        """How the plan reads in the conversation the next steps send."""
        return [ChatMessage("assistant", self.plan), ChatMessage("user", PROCEED)]


def due(interval: int | None, number: int) -> bool:
    """Whether action step ``number`` (from 1) is preceded by a plan."""
    return interval is not None and (number == 1 or (number - 1) % interval == 0)


def plan_request(
    task: str,
    so_far: Sequence[ChatMessage],
    *,
    tools: Sequence[Any],
    managed_agents: Sequence[Any],
    remaining_steps: int,
    images: tuple[Image, ...] = (),
) -> list[ChatMessage]:
    """The messages of a planning call: the first plan's (``so_far`` empty, shown the task's
    ``images``) or an update's (``so_far`` shows them already)."""
    values: dict[str, Any] = {"task": task, "tools": tools, "managed_agents": managed_agents,
                              "remaining_steps": remaining_steps}  # fmt: skip
    if not so_far:
        return [ChatMessage("user", render_prompt("planning_initial.j2", **values), images=images)]
    return [*so_far, ChatMessage("user", render_prompt("planning_update.j2", **values))]


def plan_text(output: str | None, *, initial: bool, task: str) -> str:
    """The plan as the model will read it back (what it wrote up to ``PLAN_END``)."""
    body = (output or "").split(PLAN_END, 1)[0].strip()
    if initial:
        return ("Here are the facts I know and the plan of action that I will follow to "
                f"solve the task:\n```\n{body}\n```")  # fmt: skip
    return (f"I still need to solve the task I was given:\n```\n{task}\n```\n\nHere are "
            "the facts I know and my updated plan of action to solve the task:\n"
            f"```\n{body}\n```")  # fmt: skip
