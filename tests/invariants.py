"""The invariants every event stream and audit log keeps, whatever ends a run.

Stated once, checked by the tests that cancel, time out or kill runs at any
moment: every run that starts finishes exactly once, every tool call that
starts finishes exactly once, after its start, and nothing finishes that did
not start. A run that was cancelled or failed says so (its RunFinished
carries the error), and so does each tool call it cut short. Every error is
structured: a reason, a message, whether a retry may succeed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mesh.agents.events import (
    AgentEvent,
    RunFinished,
    RunStarted,
    StepFailed,
    ToolCallFinished,
    ToolCallStarted,
)
from mesh.errors import ErrorInfo

__all__ = ["audit_problems", "stream_problems"]


def stream_problems(events: Iterable[AgentEvent]) -> list[str]:
    """What breaks the invariants in a run's events (relayed ones included); [] if none."""
    events = list(events)
    problems = _problems(
        (type(e).__name__, e.run_id, getattr(e, "call_id", ""))
        for e in events
        if isinstance(e, RunStarted | RunFinished | ToolCallStarted | ToolCallFinished)
    )
    for event in events:
        if isinstance(event, RunFinished | ToolCallFinished | StepFailed):
            kind, error = type(event).__name__, event.error
            structured = isinstance(error, ErrorInfo) and bool(error.reason)
            if not structured and (error is not None or kind == "StepFailed"):
                problems.append(f"{kind} of {event.run_id}: error {error!r}")
    return problems


def audit_problems(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """The same for audit entries (one service's own runs, or several services' together)."""
    entries = list(entries)
    problems = _problems(
        (e["event"], e["run_id"], e.get("call_id", ""))
        for e in entries
        if e.get("event") in ("RunStarted", "RunFinished", "ToolCallStarted", "ToolCallFinished")
    )
    for entry in entries:
        if entry.get("event") == "ToolCallFinished" and entry["success"] != (
            entry["error"] is None
        ):
            problems.append(f"tool call {entry['call_id']}: success does not match its error")
        kind, error = entry.get("event"), entry.get("error")
        unset = error is None and kind != "StepFailed"  # a step fails, or is not reported
        if kind in ("RunFinished", "ToolCallFinished", "StepFailed") and not (
            unset or _structured(error)
        ):
            problems.append(f"{kind} of {entry['run_id']}: error {error!r}")
    return problems


def _structured(error: Any) -> bool:
    """An error as the audit log writes it: {reason, message, retryable}."""
    return (
        isinstance(error, dict)
        and set(error) == {"reason", "message", "retryable"}
        and isinstance(error["reason"], str)
        and bool(error["reason"])
        and isinstance(error["retryable"], bool)
    )


def _problems(records: Iterable[tuple[str, str, str]]) -> list[str]:
    problems: list[str] = []
    open_runs: set[str] = set()
    open_calls: set[tuple[str, str]] = set()
    ended_runs: set[str] = set()
    ended_calls: set[tuple[str, str]] = set()
    for kind, run_id, call_id in records:
        call = (run_id, call_id)
        if kind == "RunStarted":
            if run_id in open_runs or run_id in ended_runs:
                problems.append(f"run {run_id} started twice")
            open_runs.add(run_id)
        elif kind == "RunFinished":
            if run_id not in open_runs:
                problems.append(f"run {run_id} finished without being started (or twice)")
            open_runs.discard(run_id)
            ended_runs.add(run_id)
        elif kind == "ToolCallStarted":
            if call in open_calls or call in ended_calls:
                problems.append(f"tool call {call} started twice")
            if run_id in ended_runs:
                problems.append(f"tool call {call} started after its run finished")
            open_calls.add(call)
        else:
            if call not in open_calls:
                problems.append(f"tool call {call} finished without being started (or twice)")
            open_calls.discard(call)
            ended_calls.add(call)
    problems += [f"run {r} never finished" for r in sorted(open_runs)]
    problems += [f"tool call {c} never finished" for c in sorted(open_calls)]
    return problems
