"""``agent.replay()``: a finished run, step by step, from its memory.

As smolagents' ``agent.replay()``, with more in it: the task, the plans,
each step's model output, code, tool calls with their arguments and results,
observations and errors, the final answer and the usage; ``detailed`` adds
what each step's model call read. The memory becomes the events the run reported
as it went, and ``render`` prints them, so a replay reads like ``mesh run``
live.

What a memory does not keep, a replay cannot show: how long each model call
took, and the steps of the runs the agent delegated to (they are in those
agents' memories; ``mesh replay RUN_ID`` shows a mesh run with every run
beneath it, from the audit log).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, TextIO

from mesh.agents.events import (
    AgentEvent,
    CodeAction,
    FinalAnswer,
    ModelOutput,
    Observation,
    Planning,
    RunFinished,
    RunStarted,
    StepFailed,
    ToolCallFinished,
    ToolCallStarted,
)
from mesh.agents.memory import ActionStep, AgentMemory
from mesh.agents.planning import PlanningStep
from mesh.agents.render import StepRenderer
from mesh.errors import AgentError, ErrorInfo, InvalidRequestError, MeshError
from mesh.models.base import ChatMessage, shared_prefix
from mesh.text import clip

__all__ = ["memory_events", "replay"]

NO_ANSWER = "the run has no final answer: it failed, or it has not ended"


def replay(
    memory: AgentMemory | None,
    agent: str = "agent",
    *,
    detailed: bool = False,
    file: TextIO | None = None,
    width: int = 400,
) -> None:
    """Print the run ``memory`` holds (``agent``'s) to ``file`` (default stdout, as it is
    when called: a test's or notebook's capture applies)."""
    if memory is None:
        raise InvalidRequestError(f"{agent} has no run to replay: run it first")
    out = file if file is not None else sys.stdout
    renderer = StepRenderer(width, detailed=detailed)
    lines = _history_lines(memory, agent, width)
    for event in memory_events(memory, agent):
        lines += renderer.indented(event)
    print("\n".join(lines), file=out, flush=True)


def memory_events(memory: AgentMemory, agent: str = "agent") -> Iterator[AgentEvent]:
    """The events the run reported, as far as its memory tells them (no model call times)."""
    started = [step.start_time for step in memory.steps] + [p.start_time for p in memory.plans]
    start = min(started, default=0.0)  # a plan may come before the first step
    yield RunStarted(agent=agent, run_id="", timestamp=start, task=memory.task)
    previous: tuple[ChatMessage, ...] = ()
    plans = list(memory.plans)
    for step in memory.steps:
        while plans and plans[0].step_number <= step.step_number:  # made before this step
            yield _planning(plans.pop(0), agent)
        yield from _step_events(step, agent, previous)
        previous = tuple(step.model_input) or previous
    yield from (_planning(plan, agent) for plan in plans)  # made for a step never taken
    yield _finished(memory, agent, start)


def _planning(plan: PlanningStep, agent: str) -> Planning:
    return Planning(agent=agent, run_id="", step=plan.step_number, timestamp=plan.start_time,
                    plan=plan.plan, initial=plan.initial, usage=plan.usage,
                    duration_s=plan.duration_s, prompt=tuple(plan.model_input))  # fmt: skip


def _step_events(
    step: ActionStep, agent: str, previous: tuple[ChatMessage, ...]
) -> Iterator[AgentEvent]:
    at: dict[str, Any] = {"agent": agent, "run_id": "", "step": step.step_number,
                          "timestamp": step.start_time}  # fmt: skip
    if step.model_output is not None:
        prompt = tuple(step.model_input)
        yield ModelOutput(**at, text=step.model_output.content, usage=step.usage,
                          tool_calls=step.model_output.tool_calls, prompt=prompt,
                          prompt_kept=shared_prefix(previous, prompt))  # fmt: skip
    if step.code is not None:
        yield CodeAction(**at, code=step.code)
    for call in step.tool_calls:
        yield ToolCallStarted(**at, call_id=call.call_id, name=call.name, arguments=call.arguments)
        yield ToolCallFinished(**at, call_id=call.call_id, name=call.name,
                               result=call.observation, error=call.error_info,
                               duration_s=call.duration_s)  # fmt: skip
    if step.error is not None:
        yield StepFailed(**at, error=step.error_info or ErrorInfo(MeshError.code, step.error))
    elif step.observation is not None:
        yield Observation(**at, text=step.observation)
    if step.is_final:
        yield FinalAnswer(**at, answer=step.final_answer)


def _finished(memory: AgentMemory, agent: str, start: float) -> RunFinished:
    ends = [step.end_time for step in memory.steps if step.end_time is not None]
    error = None if memory.final_step is not None else ErrorInfo(AgentError.code, NO_ANSWER)
    return RunFinished(
        agent=agent,
        run_id="",
        timestamp=max(ends, default=start),
        usage=memory.usage,
        duration_s=max(ends, default=start) - start,
        steps=len(memory.steps),
        error=error,
        usage_by_agent={agent: memory.agent_usage},
    )


def _history_lines(memory: AgentMemory, agent: str, width: int) -> list[str]:
    """The conversation the run continued: each earlier task and its answer."""
    if not memory.history:
        return []
    lines = [f"[{agent}] continues a conversation of {len(memory.history)} earlier turn(s):"]
    for turn in memory.history:
        lines.append(f"  earlier task: {clip(turn.task, width, one_line=True)}")
        lines.append(f"  its answer: {clip(turn.answer, width, one_line=True)}")
    return lines
