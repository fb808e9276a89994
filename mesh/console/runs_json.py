"""Run records as the console's JSON (``RunJSON``), and the text rules every JSON of it follows.

What reaches the page is text as text (the page escapes it), bounded (a run's
answer or a tool's result may be megabytes: the page shows the start of it), and
redacted as the audit log is (``mesh.telemetry.redact``): a key that a tool
printed does not reach a browser. Times are Unix seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mesh.agents.usage import AgentUsage
from mesh.errors import ErrorInfo
from mesh.host.run_record import RunRecord
from mesh.models.base import TokenUsage
from mesh.telemetry.redact import redact
from mesh.text import clip

__all__ = [
    "SHOWN_ANSWER_CHARS",
    "SHOWN_TASK_CHARS",
    "SHOWN_TEXT_CHARS",
    "answer_json",
    "bounded",
    "error_json",
    "run_json",
    "shown",
    "usage_by_agent_json",
    "usage_json",
]

SHOWN_TASK_CHARS = 2000
SHOWN_ANSWER_CHARS = 10_000
SHOWN_TEXT_CHARS = 20_000
"""The most of one string of an event the page gets."""
MAX_ITEMS = 200
MAX_DEPTH = 20
_SECRET_SPAN = 200
"""Longer than any secret ``redact`` knows: redacting this far past the cut is enough."""


def shown(text: str | None, limit: int = SHOWN_TEXT_CHARS) -> str:
    """``text`` redacted and clipped to ``limit`` (redacted first: a key cut in half by
    the clip would no longer be recognised)."""
    if not text:
        return ""
    return clip(redact(text[: limit + _SECRET_SPAN]), limit)


def bounded(value: Any, limit: int = SHOWN_TEXT_CHARS, depth: int = 0) -> Any:
    """A JSON value (tool arguments) with its strings ``shown`` and its containers cut to
    ``MAX_ITEMS`` entries and ``MAX_DEPTH`` levels."""
    if isinstance(value, str):
        return shown(value, limit)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_DEPTH:
        return "..."
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_ITEMS]
        return {shown(str(k), 200): bounded(v, limit, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [bounded(v, limit, depth + 1) for v in value[:MAX_ITEMS]]
    return shown(str(value), limit)


def answer_json(answer: Any, limit: int) -> str:
    """An answer as text: a string as it is, any other value as its JSON."""
    text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False,
                                                             default=str)  # fmt: skip
    return shown(text, limit)


def error_json(error: ErrorInfo | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"reason": error.reason, "message": shown(error.message, SHOWN_ANSWER_CHARS)}


def usage_json(usage: TokenUsage) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}


def usage_by_agent_json(usage: Mapping[str, AgentUsage]) -> dict[str, dict[str, Any]]:
    return {
        name: {"input_tokens": u.tokens.input_tokens, "output_tokens": u.tokens.output_tokens,
               "cost_usd": u.cost_usd, "model_calls": u.model_calls}
        for name, u in usage.items()
    }  # fmt: skip


def run_json(run: RunRecord) -> dict[str, Any]:
    """``RunJSON``: the record, with the cost of the whole tree beneath the run (None when
    some model's price is unknown, or before the run has reported any usage)."""
    cost = sum(run.usage_by_agent.values(), AgentUsage()).cost_usd if run.usage_by_agent else None
    return {
        "agent": run.agent,
        "run_id": run.run_id,
        "task": shown(run.task, SHOWN_TASK_CHARS),
        "status": run.status.value,
        "session_id": run.session_id,
        "parent_run_id": run.parent_run_id,
        "created": run.created,
        "started": run.started,
        "ended": run.ended,
        "steps": run.steps,
        "usage": usage_json(run.usage),
        "cost_usd": cost,
        "usage_by_agent": usage_by_agent_json(run.usage_by_agent),
        "error": error_json(run.error),
        "answer": None if run.answer is None else answer_json(run.answer, SHOWN_ANSWER_CHARS),
    }
