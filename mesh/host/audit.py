"""The audit log: an append-only JSONL record of every run a service served.

One line per event of the service's own runs: the run's start and end, each
model call (model, the prompt's new messages, output, tokens, latency), each tool call
(arguments, result, latency, success), and each step error (sandbox limits
included), with agent, run, parent run, step and timestamps. An error (a tool
call's, a step's, a run's) is an object: reason, message, retryable. Prompt and
output text follow the content setting and are redacted; an entry is clipped
to ``MAX_RECORD_BYTES``. A model call's prompt repeats the run's earlier
messages, so an entry holds only the messages that are new since the run's
previous call (``prompt``) and how many it kept from that call's prompt
(``prompt_kept``): the log grows with a run's steps, not their square, and
``full_prompts`` rebuilds every prompt from a run's entries. The file rotates
within a budget (a share of the service's data limit) that also covers what
earlier processes of the service left (``RotatingFile``).

``mesh audit RUN_ID`` reads a run and the runs beneath it across every
service's file, streaming: delegations may sit in any file in any order, so
it passes over the files until the set of runs stops growing, keeping only
run ids, then keeps the entries of those runs. A pass reads just two fields
of each line; only the lines it wants are parsed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mesh.agents import events as ev
from mesh.append_only import MAX_RECORD_BYTES, json_line, parse_record, read_lines, string_field
from mesh.errors import ErrorInfo
from mesh.models.base import ChatMessage
from mesh.paths import data_path, writable_dir
from mesh.rotating_file import RotatingFile
from mesh.telemetry.redact import redact, shape

__all__ = ["AuditLog", "default_audit_dir", "full_prompts", "read_run"]

MAX_AUDIT_BYTES = 50 * 1024 * 1024
AUDIT_BACKUPS = 5


def default_audit_dir() -> Path:
    return data_path("MESH_AUDIT_DIR", "audit")


class AuditLog:
    """Rotated at ``max_bytes`` with ``backups``; with a ``family`` (the service's name),
    earlier processes' files count in its budget (see ``RotatingFile``)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = MAX_AUDIT_BYTES,
        backups: int = AUDIT_BACKUPS,
        family: str = "",
    ) -> None:
        self.path = path
        self._file = RotatingFile(path, max_bytes=max_bytes, backups=backups, family=family)
        self._max_line = min(MAX_RECORD_BYTES, max_bytes)

    @classmethod
    def for_service(cls, name: str, budget_bytes: int) -> AuditLog:
        """The audit log of this process of service ``name``: its own file (replicas never
        share one), within ``budget_bytes`` with its backups and earlier processes' files."""
        directory = writable_dir(default_audit_dir(), "audit directory", "MESH_AUDIT_DIR")
        path = directory / f"{name}-{os.getpid()}.jsonl"
        return cls(path, max_bytes=budget_bytes // (AUDIT_BACKUPS + 1), family=name)

    def record(self, event: ev.AgentEvent) -> None:
        """Append ``event`` if it belongs to a run of this service (depth 0 here), and is
        not a piece of a model answer."""
        if event.depth != 0:
            return  # a delegated run: the service that ran it audits it
        if isinstance(event, ev.ModelOutputDelta):
            return  # its ModelOutput holds the whole text
        entry = _entry(event)
        line = json_line(entry, self._max_line, ensure_ascii=False)
        # A run's end is what its caller is answered with: make the whole record durable.
        self._file.append([line], sync=isinstance(event, ev.RunFinished))

    def close(self) -> None:
        self._file.close()


def full_prompts(entries: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Each model call's whole prompt, in the order of ``entries`` (a run's, oldest first,
    as ``read_run`` gives them): its run's previous prompt up to ``prompt_kept``, then its
    own new messages."""
    last: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if entry.get("event") == "ModelOutput":
            run = entry["run_id"]
            prompt = last.get(run, [])[: entry.get("prompt_kept", 0)] + entry["prompt"]
            last[run] = prompt
            yield prompt


def _message(message: ChatMessage) -> dict[str, Any]:
    """A prompt's message as the audit keeps it: shaped text, and its images' digests."""
    entry: dict[str, Any] = {"role": message.role, "content": shape(message.content)}
    if message.images:
        entry["images"] = [image.digest() for image in message.images]
    return entry


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
            if event.trace_id:
                entry["trace_id"] = event.trace_id
        case ev.ModelOutput():
            entry.update(
                model_id=event.model_id,
                output=shape(event.text),
                tool_calls=[{"name": c.name, "arguments": shape(c.arguments)}
                            for c in event.tool_calls],
                prompt_kept=event.prompt_kept,
                prompt=[_message(m) for m in event.prompt[event.prompt_kept :]],
                input_tokens=event.usage.input_tokens,
                output_tokens=event.usage.output_tokens,
                latency_s=event.duration_s,
                cached=event.cached,
            )  # fmt: skip
        case ev.Planning():
            entry.update(
                model_id=event.model_id,
                plan=shape(event.plan),
                initial=event.initial,
                # An update's prompt is the run so far (recorded with its steps) and one ask.
                prompt_kept=0 if event.initial else max(0, len(event.prompt) - 1),
                prompt=[_message(m) for m in event.prompt[0 if event.initial else -1 :]],
                input_tokens=event.usage.input_tokens,
                output_tokens=event.usage.output_tokens,
                latency_s=event.duration_s,
            )
        case ev.CodeAction():
            entry["code"] = shape(event.code)
        case ev.InputRequested():
            entry["question"] = shape(event.question)
        case ev.ToolCallStarted():
            entry.update(
                tool=event.name,
                call_id=event.call_id,
                arguments=json.loads(redact(json.dumps(event.arguments, default=str))),
            )
        case ev.ToolCallFinished():
            entry.update(tool=event.name, call_id=event.call_id, result=shape(event.result),
                         error=_error(event.error), success=event.error is None,
                         latency_s=event.duration_s)  # fmt: skip
        case ev.Observation():
            entry["observation"] = shape(event.text)
        case ev.StepFailed():
            entry["error"] = _error(event.error, shaped=True)
        case ev.FinalAnswer():
            entry["answer"] = shape(event.answer if isinstance(event.answer, str)
                                    else json.dumps(event.answer, default=str))  # fmt: skip
        case ev.RunFinished():
            entry.update(
                error=_error(event.error),
                steps=event.steps,
                duration_s=event.duration_s,
                usage_by_agent={n: asdict(u) for n, u in event.usage_by_agent.items()},
            )
    return entry


def _error(error: ErrorInfo | None, *, shaped: bool = False) -> dict[str, Any] | None:
    """An error as an entry holds it, None for none. A step's error quotes the model's
    code and what it printed: its message follows the content setting (``shaped``)."""
    if error is None:
        return None
    message = shape(error.message) if shaped else error.message
    return {"reason": error.reason, "message": message, "retryable": error.retryable}


def read_run(directory: Path, run_id: str) -> list[dict[str, Any]]:
    """The entries of ``run_id`` and of every run beneath it, from every service, in time
    order. Memory: the ids of those runs and their entries, one line of a file at a time."""
    paths = sorted(directory.glob("*.jsonl*"))
    runs = {run_id}
    while True:  # follow delegations downwards, whatever the order of the files
        known = len(runs)
        entries = []
        for line in _lines(paths):
            run = string_field(line, "run_id")
            if run not in runs and string_field(line, "parent_run_id") in runs:
                entry = parse_record(line)  # a run beneath: check what the quick look said
                if entry is not None and entry.get("parent_run_id") in runs:
                    run = entry.get("run_id")
                    if isinstance(run, str):
                        runs.add(run)
            if run in runs:
                entry = parse_record(line)
                if entry is not None and entry.get("run_id") in runs:
                    entries.append(entry)
        if len(runs) == known:  # a whole pass with the same runs: its entries are all of them
            return sorted(entries, key=_timestamp)


def _lines(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        yield from read_lines(path, MAX_RECORD_BYTES)


def _timestamp(entry: dict[str, Any]) -> float:
    ts = entry.get("ts")
    return float(ts) if isinstance(ts, int | float) else 0.0
