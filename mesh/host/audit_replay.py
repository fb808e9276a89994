"""Audit entries back into step events: how ``mesh replay RUN_ID`` shows a past run.

The inverse of ``audit._entry``, as far as an entry keeps the event: texts
as the content setting shaped them (clipped, redacted, or not kept at all),
a model call's tool calls without their ids, and each model call's prompt
rebuilt whole (``full_prompts``). Each service audits only its own runs, at
depth 0; the delegation tree is rebuilt from the runs' parents, so the runs
beneath the one asked for print nested, as ``mesh run`` prints them live.

Audit files are read as they are found: an entry missing a field, or with
one of the wrong type, still prints, with what it has (an entry of a kind
this version does not know is left out).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, cast

from mesh.agents import events as ev
from mesh.agents.usage import AgentUsage
from mesh.errors import ErrorInfo
from mesh.host.audit import full_prompts
from mesh.models.base import ChatMessage, Role, TokenUsage, ToolCall

__all__ = ["replayed_events"]

_ROLES = ("system", "user", "assistant", "tool")


def replayed_events(entries: list[dict[str, Any]], run_id: str) -> Iterator[ev.AgentEvent]:
    """The events of ``entries`` (``read_run(directory, run_id)``'s, in time order), with
    depths counted from ``run_id``."""
    depths = _depths(entries, run_id)
    prompts = iter(full_prompts(e for e in entries if _is_model_call(e)))
    tokens: dict[str, TokenUsage] = {}  # a run's own, for its end: its model calls' sum
    for entry in entries:
        event = _event(entry, _common(entry, depths), prompts, tokens)
        if event is not None:
            yield event


def _common(entry: dict[str, Any], depths: dict[str, int]) -> dict[str, Any]:
    """The fields every event has."""
    run, parent = _text(entry, "run_id"), entry.get("parent_run_id")
    return {"agent": _text(entry, "agent"), "run_id": run, "step": _int(entry, "step"),
            "parent_run_id": parent if isinstance(parent, str) else None,
            "timestamp": _float(entry, "ts"), "depth": depths.get(run, 0)}  # fmt: skip


def _event(
    entry: dict[str, Any],
    common: dict[str, Any],
    prompts: Iterator[list[dict[str, Any]]],
    tokens: dict[str, TokenUsage],
) -> ev.AgentEvent | None:
    match entry.get("event"):
        case "RunStarted":
            return ev.RunStarted(**common, task=_text(entry, "task"),
                                 trace_id=_text(entry, "trace_id"))  # fmt: skip
        case "ModelOutput" if _is_model_call(entry):
            usage = TokenUsage(_int(entry, "input_tokens"), _int(entry, "output_tokens"))
            run = common["run_id"]
            tokens[run] = tokens.get(run, TokenUsage()) + usage
            prompt = tuple(_message(m) for m in next(prompts))
            text = entry.get("output")
            return ev.ModelOutput(**common, text=text if isinstance(text, str) else None,
                                  usage=usage,
                                  tool_calls=_tool_calls(entry), model_id=_text(entry, "model_id"),
                                  duration_s=_float(entry, "latency_s"), prompt=prompt,
                                  prompt_kept=_int(entry, "prompt_kept"))  # fmt: skip
        case "Planning":
            usage = TokenUsage(_int(entry, "input_tokens"), _int(entry, "output_tokens"))
            run = common["run_id"]
            tokens[run] = tokens.get(run, TokenUsage()) + usage
            return ev.Planning(**common, plan=_text(entry, "plan"), usage=usage,
                               initial=entry.get("initial") is not False,
                               model_id=_text(entry, "model_id"),
                               duration_s=_float(entry, "latency_s"))  # fmt: skip
        case "CodeAction":
            return ev.CodeAction(**common, code=_text(entry, "code"))
        case "InputRequested":
            return ev.InputRequested(**common, question=_text(entry, "question"))
        case "ToolCallStarted":
            found = entry.get("arguments")
            arguments = found if isinstance(found, dict) else {}
            name, call_id = _text(entry, "tool"), _text(entry, "call_id")
            return ev.ToolCallStarted(**common, name=name, call_id=call_id, arguments=arguments)
        case "ToolCallFinished":
            return ev.ToolCallFinished(**common, name=_text(entry, "tool"),
                                       call_id=_text(entry, "call_id"),
                                       result=_text(entry, "result"), error=_error(entry),
                                       duration_s=_float(entry, "latency_s"))  # fmt: skip
        case "Observation":
            return ev.Observation(**common, text=_text(entry, "observation"))
        case "StepFailed":
            return ev.StepFailed(**common, error=_error(entry) or ErrorInfo("unknown", ""))
        case "FinalAnswer":
            return ev.FinalAnswer(**common, answer=_text(entry, "answer"))
        case "RunFinished":
            return ev.RunFinished(**common, usage=tokens.get(common["run_id"], TokenUsage()),
                                  duration_s=_float(entry, "duration_s"),
                                  steps=_int(entry, "steps"), error=_error(entry),
                                  usage_by_agent=_usage_by_agent(entry))  # fmt: skip
    return None


def _depths(entries: Iterable[dict[str, Any]], root: str) -> dict[str, int]:
    """Each run's depth below ``root``, by following parents (at most once round a loop)."""
    parents = {e.get("run_id"): e.get("parent_run_id") for e in entries}
    depths: dict[str, int] = {}
    for run in parents:
        if not isinstance(run, str):
            continue
        depth, up, seen = 0, run, {run}
        while up != root and isinstance(parent := parents.get(up), str) and parent not in seen:
            depth, up = depth + 1, parent
            seen.add(parent)
        depths[run] = depth
    return depths


def _is_model_call(entry: dict[str, Any]) -> bool:
    """A model call ``full_prompts`` can read."""
    return (entry.get("event") == "ModelOutput" and isinstance(entry.get("run_id"), str)
            and isinstance(entry.get("prompt"), list))  # fmt: skip


def _message(data: Any) -> ChatMessage:
    data = data if isinstance(data, dict) else {}
    role = data.get("role") if data.get("role") in _ROLES else "user"
    content = data.get("content")
    return ChatMessage(cast(Role, role), content if isinstance(content, str) else None)


def _tool_calls(entry: dict[str, Any]) -> tuple[ToolCall, ...]:
    calls = entry.get("tool_calls")
    return tuple(
        ToolCall("", str(call.get("name", "")), str(call.get("arguments", "")))
        for call in (calls if isinstance(calls, list) else ())
        if isinstance(call, dict)
    )


def _error(entry: dict[str, Any]) -> ErrorInfo | None:
    error = entry.get("error")
    if not isinstance(error, dict):
        return None
    return ErrorInfo(str(error.get("reason", "")), str(error.get("message", "")),
                     error.get("retryable") is True)  # fmt: skip


def _usage_by_agent(entry: dict[str, Any]) -> dict[str, AgentUsage]:
    found = entry.get("usage_by_agent")
    usage: dict[str, AgentUsage] = {}
    for agent, data in (found if isinstance(found, dict) else {}).items():
        if isinstance(data, dict) and isinstance(data.get("tokens"), dict):
            tokens = TokenUsage(_int(data["tokens"], "input_tokens"),
                                _int(data["tokens"], "output_tokens"))  # fmt: skip
            cost = data.get("cost_usd")
            usage[agent] = AgentUsage(tokens, cost if isinstance(cost, int | float) else None,
                                      _int(data, "model_calls"))  # fmt: skip
    return usage


def _text(entry: dict[str, Any], key: str) -> str:
    """A text of the entry; one the content setting did not keep (None) reads as empty."""
    value = entry.get(key)
    return value if isinstance(value, str) else ""


def _int(entry: dict[str, Any], key: str) -> int:
    value = entry.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(entry: dict[str, Any], key: str) -> float:
    value = entry.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
