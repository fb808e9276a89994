"""Rendering step events for people at a terminal.

One line (or a short block) per event, indented by delegation depth, so a
run reads top to bottom as it happens: what the model said, which code or
tool ran with which arguments, what came back, and the final tally.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, TextIO

from mesh.agents.events import (
    AgentEvent,
    CodeAction,
    FinalAnswer,
    ModelOutput,
    Observation,
    RunFinished,
    RunStarted,
    StepFailed,
    ToolCallFinished,
    ToolCallStarted,
)
from mesh.agents.usage import AgentUsage
from mesh.text import clip

__all__ = ["EventPrinter", "say"]

_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)


class EventPrinter:
    def __init__(self, out: TextIO = sys.stdout, width: int = 400) -> None:
        self.out = out
        self.width = width
        self._code_steps: set[tuple[str, int]] = set()

    def __call__(self, event: AgentEvent) -> None:
        for line in self.lines(event):
            print("    " * event.depth + line, file=self.out, flush=True)

    def lines(self, event: AgentEvent) -> list[str]:
        who = f"[{event.agent}]"
        match event:
            case RunStarted():
                return [f"{who} task: {self._line(event.task)}"]
            case ModelOutput():
                usage = f"{event.usage.input_tokens} in / {event.usage.output_tokens} out tokens"
                head = f"{who} step {event.step}: model ({usage}, {event.duration_s:.2f} s)"
                prose = _CODE_BLOCK.sub("", event.text or "")  # code is shown by CodeAction
                return [
                    head,
                    *[f"  | {self._line(line)}" for line in prose.splitlines() if line.strip()],
                ]
            case CodeAction():
                self._code_steps.add((event.run_id, event.step))
                return ["  code:", *[f"    {line}" for line in event.code.splitlines()]]
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
                status = f"failed: {event.error}" if event.error else "done"
                own = (
                    f"{event.usage.input_tokens} input + {event.usage.output_tokens} output tokens"
                )
                lines = [
                    f"{who} {status} in {event.duration_s:.2f} s, {event.steps} step(s), {own}"
                ]
                if len(event.usage_by_agent) > 1:
                    total = sum((u for u in event.usage_by_agent.values()), AgentUsage())
                    cost = "cost unknown" if total.cost_usd is None else f"${total.cost_usd:.4f}"
                    lines.append(
                        f"{who} with its delegates: {total.model_calls} model calls, "
                        f"{total.tokens.input_tokens} input + {total.tokens.output_tokens} output "
                        f"tokens, {cost}"
                    )
                return lines
        return []

    def _line(self, text: str) -> str:
        return clip(text, self.width, one_line=True)


def _arguments(arguments: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={json.dumps(v, default=repr, ensure_ascii=False)}" for k, v in arguments.items()
    )


def say(message: str) -> None:
    """A note for the person at the terminal (stderr, so stdout stays the output)."""
    print(message, file=sys.stderr, flush=True)
