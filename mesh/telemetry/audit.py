"""The audit log: an append-only JSONL record of every run a service served.

One line per event of the service's own runs: the run's start and end, each
model call (model, prompt, output, tokens, latency), each tool call
(arguments, result, latency, success), and each step error (sandbox limits
included), with agent, run, parent run, step and timestamps. Prompt and
output text follow the content setting and are redacted. The file rotates by
size; ``mesh audit RUN_ID`` reads a run and the runs beneath it across
every service's file.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mesh.agents import events as ev
from mesh.append_only import read_records
from mesh.paths import data_path
from mesh.rotating_file import RotatingFile
from mesh.telemetry.redact import redact, shape

__all__ = ["AuditLog", "default_audit_dir", "read_run"]


def default_audit_dir() -> Path:
    return data_path("MESH_AUDIT_DIR", "audit")


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = 50 * 1024 * 1024, backups: int = 5) -> None:
        self.path = path
        self._file = RotatingFile(path, max_bytes=max_bytes, backups=backups)

    def record(self, event: ev.AgentEvent) -> None:
        """Append ``event`` if it belongs to a run of this service (depth 0 here)."""
        if event.depth != 0:
            return  # a delegated run: the service that ran it audits it
        line = json.dumps(_entry(event), ensure_ascii=False, default=str) + "\n"
        # A run's end is what its caller is answered with: make the whole record durable.
        self._file.append([line], sync=isinstance(event, ev.RunFinished))

    def close(self) -> None:
        self._file.close()


def _entry(event: ev.AgentEvent) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ts": event.timestamp,
        "event": type(event).__name__,
        "agent": event.agent,
        "run_id": event.run_id,
        "parent_run_id": event.parent_run_id,
        "step": event.step,
    }
    match event:
        case ev.RunStarted():
            entry["task"] = shape(event.task)
        case ev.ModelOutput():
            entry.update(
                model_id=event.model_id,
                prompt=[{"role": m.role, "content": shape(m.content)} for m in event.prompt],
                output=shape(event.text),
                tool_calls=[{"name": c.name, "arguments": shape(c.arguments)}
                            for c in event.tool_calls],
                input_tokens=event.usage.input_tokens,
                output_tokens=event.usage.output_tokens,
                latency_s=event.duration_s,
                cached=event.cached,
            )  # fmt: skip
        case ev.CodeAction():
            entry["code"] = shape(event.code)
        case ev.ToolCallStarted():
            entry.update(
                tool=event.name,
                call_id=event.call_id,
                arguments=json.loads(redact(json.dumps(event.arguments, default=str))),
            )
        case ev.ToolCallFinished():
            entry.update(tool=event.name, call_id=event.call_id, result=shape(event.result),
                         error=event.error, success=event.error is None,
                         latency_s=event.duration_s)  # fmt: skip
        case ev.Observation():
            entry["observation"] = shape(event.text)
        case ev.StepFailed():
            entry["error"] = shape(event.error)
        case ev.FinalAnswer():
            entry["answer"] = shape(event.answer if isinstance(event.answer, str)
                                    else json.dumps(event.answer, default=str))  # fmt: skip
        case ev.RunFinished():
            entry.update(
                error=event.error,
                steps=event.steps,
                duration_s=event.duration_s,
                usage_by_agent={n: asdict(u) for n, u in event.usage_by_agent.items()},
            )
    return entry


def read_run(directory: Path, run_id: str) -> list[dict[str, Any]]:
    """The entries of ``run_id`` and of every run beneath it, from every service, in time order."""
    entries: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl*")):
        entries.extend(read_records(path))
    runs = {run_id}
    grew = True
    while grew:  # follow delegations downwards, whatever the order of the files
        children = {e["run_id"] for e in entries if e.get("parent_run_id") in runs}
        grew = not children <= runs
        runs |= children
    return sorted((e for e in entries if e.get("run_id") in runs), key=lambda e: e["ts"])
