"""A run's events as the console's JSON (``EventJSON``), and as Server-Sent Events.

Every event has its place in the run's record (``index``, what a reconnecting page
resumes after), who produced it (agent, run, parent run, depth in the delegation
tree) and its step and time; each kind adds its own fields, named as the contract
names them. Strings follow ``runs_json``'s rules: text as text, redacted, bounded.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mesh.agents import events as ev
from mesh.console.runs_json import (
    SHOWN_TEXT_CHARS,
    answer_json,
    bounded,
    error_json,
    run_json,
    shown,
    usage_by_agent_json,
)
from mesh.host.run_record import RunRecord

__all__ = ["end_message", "event_json", "event_message", "event_type"]


def event_type(event: ev.AgentEvent) -> str:
    """``ToolCallFinished`` -> ``tool_call_finished``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


def event_json(index: int, event: ev.AgentEvent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": index,
        "type": event_type(event),
        "agent": event.agent,
        "run_id": event.run_id,
        "parent_run_id": event.parent_run_id or "",
        "depth": event.depth,
        "step": event.step,
        "time": event.timestamp,
    }
    out.update(_fields(event))
    return out


def _fields(event: ev.AgentEvent) -> dict[str, Any]:
    match event:
        case ev.RunStarted():
            # getattr: events of a service older than trace ids have none
            return {"task": shown(event.task), "trace_id": getattr(event, "trace_id", "") or ""}
        case ev.ModelOutput():
            return {
                "text": shown(event.text),
                "tool_calls": [{"name": shown(c.name, 200), "arguments": shown(c.arguments)}
                               for c in event.tool_calls],
                "input_tokens": event.usage.input_tokens,
                "output_tokens": event.usage.output_tokens,
                "model_id": event.model_id,
                "duration_s": event.duration_s,
                "cached": event.cached,
            }  # fmt: skip
        case ev.ModelOutputDelta():
            return {"text": shown(event.text), "planning": event.planning}
        case ev.Planning():
            return {"plan": shown(event.plan), "initial": event.initial,
                    "input_tokens": event.usage.input_tokens,
                    "output_tokens": event.usage.output_tokens}  # fmt: skip
        case ev.CodeAction():
            return {"code": shown(event.code)}
        case ev.ToolCallStarted():
            return {"call_id": event.call_id, "name": shown(event.name, 200),
                    "arguments": bounded(event.arguments)}  # fmt: skip
        case ev.ToolCallFinished():
            return {"call_id": event.call_id, "name": shown(event.name, 200),
                    "result": shown(event.result), "error": error_json(event.error),
                    "duration_s": event.duration_s}  # fmt: skip
        case ev.Observation():
            return {"text": shown(event.text)}
        case ev.StepFailed():
            return {"error": error_json(event.error)}
        case ev.InputRequested():
            return {"question": shown(event.question)}
        case ev.FinalAnswer():
            return {"answer": answer_json(event.answer, SHOWN_TEXT_CHARS)}
        case ev.RunFinished():
            return {
                "input_tokens": event.usage.input_tokens,
                "output_tokens": event.usage.output_tokens,
                "duration_s": event.duration_s,
                "steps": event.steps,
                "error": error_json(event.error),
                "usage_by_agent": usage_by_agent_json(event.usage_by_agent),
            }
    return {}


def _json(value: Any) -> str:
    """One line of JSON: ``json.dumps`` escapes newlines inside strings, so an SSE
    ``data:`` line never breaks."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def event_message(index: int, event: ev.AgentEvent) -> str:
    """The event as one Server-Sent Event: its index as the SSE id (``Last-Event-ID``)."""
    return f"id: {index}\ndata: {_json(event_json(index, event))}\n\n"


def end_message(run: RunRecord) -> str:
    """The last message of a stream: the run as it ended."""
    return f"event: end\ndata: {_json(run_json(run))}\n\n"
