"""The invariants every event stream and audit log keeps, whatever ends a run.

Stated once, checked by the tests that cancel, time out or kill runs at any
moment: every run that starts finishes exactly once, every tool call that
starts finishes exactly once, after its start, and nothing finishes that did
not start. A run that was cancelled or failed says so (its RunFinished
carries the error), and so does each tool call it cut short.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mesh.agents.events import (
    AgentEvent,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)

__all__ = ["audit_problems", "stream_problems"]


def stream_problems(events: Iterable[AgentEvent]) -> list[str]:
    """What breaks the invariants in a run's events (relayed ones included); [] if none."""
    return _problems(
        (type(e).__name__, e.run_id, getattr(e, "call_id", ""))
        for e in events
        if isinstance(e, RunStarted | RunFinished | ToolCallStarted | ToolCallFinished)
    )


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
    return problems


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
