"""Step events as lines for a person to read.

One renderer for every way a run is shown: live (``mesh run`` prints the
events as they stream in), from an agent's memory (``agent.replay()``) and
from the audit log (``mesh replay``); each turns its source into events and
hands them here, so the three read alike. It lives in the agents layer, not
the command line's, because ``agent.replay()`` is library API.

A line per event (or a short block), indented by delegation depth: what the
model said, which code or tool ran with which arguments, what came back,
and the final tally; a plan (``planning_interval``) in full. ``detailed`` adds
what each step's model call read: only the messages that are new since the
run's previous step, as the audit log keeps them, so a long run's replay grows
with its steps, not their square.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mesh.agents.events import (
    AgentEvent,
    CodeAction,
    FinalAnswer,
    InputRequested,
    ModelOutput,
    Observation,
    Planning,
    RunFinished,
    RunStarted,
    StepFailed,
    ToolCallFinished,
    ToolCallStarted,
)
from mesh.agents.usage import AgentUsage
from mesh.models.base import ChatMessage
from mesh.text import clip

__all__ = ["INDENT", "StepRenderer"]

INDENT = "    "
"""One level of delegation."""
_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)


class StepRenderer:
    """Stateful across one run's events: a code step's observation is shown (it is what the
    code printed), a tool-calling step's is not (it repeats the tool results shown already)."""

    def __init__(self, width: int = 400, *, detailed: bool = False) -> None:
        self.width = width
        self.detailed = detailed
        self._code_steps: set[tuple[str, int]] = set()

    def indented(self, event: AgentEvent) -> list[str]:
        """The event's lines, indented by its depth in the delegation tree."""
        return [INDENT * event.depth + line for line in self.lines(event)]

    def lines(self, event: AgentEvent) -> list[str]:
        who = f"[{event.agent}]"
        match event:
            case RunStarted():
                return [f"{who} task: {self._line(event.task)}"]
            case ModelOutput():
                return self._model_output(who, event)
            case Planning():
                return self._planning(who, event)
            case CodeAction():
                self._code_steps.add((event.run_id, event.step))
                return ["  code:", *[f"    {line}" for line in event.code.splitlines()]]
            case InputRequested():
                return [f"{who} asks: {self._line(event.question)}"]
            case ToolCallStarted() | ToolCallFinished() if event.name == "final_answer":
                return []
            case ToolCallStarted():
                return [f"  -> {event.name}({self._line(_arguments(event.arguments))})"]
            case ToolCallFinished():
                outcome = f"error: {event.error}" if event.error else event.result
                return [
                    f"  <- {event.name}: {self._line(outcome)} ({event.duration_s * 1000:.1f} ms)"
                ]
            case Observation() if (event.run_id, event.step) in self._code_steps:
                return [
                    f"  observation: {self._line(line)}" for line in event.text.splitlines()[:20]
                ]
            case StepFailed():
                return [f"  ! {self._line(line)}" for line in str(event.error).splitlines()[:20]]
            case FinalAnswer():
                return [f"{who} final answer: {self._line(str(event.answer))}"]
            case RunFinished():
                return self._run_finished(who, event)
        return []

    def _model_output(self, who: str, event: ModelOutput) -> list[str]:
        """A source that does not know how long the call took (a memory) passes 0 s: no
        time is shown rather than a wrong one."""
        usage = f"{event.usage.input_tokens} in / {event.usage.output_tokens} out tokens"
        took = f", {event.duration_s:.2f} s" if event.duration_s > 0 else ""
        lines = [f"{who} step {event.step}: model ({usage}{took})"]
        if self.detailed:
            lines += self._prompt(event)
        prose = _CODE_BLOCK.sub("", event.text or "")  # code is shown by CodeAction
        return lines + [f"  | {self._line(line)}" for line in prose.splitlines() if line.strip()]

    def _planning(self, who: str, event: Planning) -> list[str]:
        """The plan in full: it is what the model reads back before its next steps."""
        usage = f"{event.usage.input_tokens} in / {event.usage.output_tokens} out tokens"
        took = f", {event.duration_s:.2f} s" if event.duration_s > 0 else ""
        kind = "plan" if event.initial else "updated plan"
        lines = [f"{who} {kind} before step {event.step} ({usage}{took})"]
        return lines + [
            f"  | {self._line(line)}" for line in event.plan.splitlines() if line.strip()
        ]

    def _prompt(self, event: ModelOutput) -> list[str]:
        new = event.prompt[event.prompt_kept :]
        if not new:
            return []
        kept = event.prompt_kept
        after = f" (after the {kept} message(s) of the previous call)" if kept else ""
        lines = [f"  model input{after}:"]
        for message in new:
            lines += self._message(message)
        return lines

    def _message(self, message: ChatMessage) -> list[str]:
        role = message.role if message.tool_call_id is None else f"tool ({message.tool_call_id})"
        text = "(not recorded)" if message.content is None and not message.tool_calls else ""
        lines = [f"    {role}: {text}".rstrip()]
        lines += [
            f"      {clip(line, self.width)}" for line in (message.content or "").splitlines()
        ]
        lines += [f"      -> {call.name}({self._line(call.arguments)})"
                  for call in message.tool_calls]  # fmt: skip
        return lines

    def _run_finished(self, who: str, event: RunFinished) -> list[str]:
        status = f"failed: {event.error}" if event.error else "done"
        own = f"{event.usage.input_tokens} input + {event.usage.output_tokens} output tokens"
        lines = [f"{who} {status} in {event.duration_s:.2f} s, {event.steps} step(s), {own}"]
        if len(event.usage_by_agent) > 1:
            total = sum((u for u in event.usage_by_agent.values()), AgentUsage())
            cost = "cost unknown" if total.cost_usd is None else f"${total.cost_usd:.4f}"
            lines.append(
                f"{who} with its delegates: {total.model_calls} model calls, "
                f"{total.tokens.input_tokens} input + {total.tokens.output_tokens} output "
                f"tokens, {cost}"
            )
        return lines

    def _line(self, text: str) -> str:
        return clip(text, self.width, one_line=True)


def _arguments(arguments: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={json.dumps(v, default=repr, ensure_ascii=False)}" for k, v in arguments.items()
    )
