"""Cassettes: recorded model outputs replayed through the real code paths.

A cassette is a JSONL file. Each line is one model call::

    {"task": "What is 7!?", "turn": 0,
     "response": {"content": "...", "tool_calls": [{"id": "c1", "name": "factorial",
                  "arguments": "{\\"n\\": 7}"}],
                  "usage": {"input_tokens": 812, "output_tokens": 41},
                  "model": "gpt-4o-mini", "finish_reason": "tool_calls"},
     "request": [...]}

- ``task``: the first user message of the conversation (the run's task).
  Omit it to make an entry answer any task.
- ``turn``: how many assistant messages the conversation already holds, i.e.
  0 for a run's first model call. Omitted, it counts up per task in file
  order.
- ``response``: the assistant message; ``usage``, ``model`` and
  ``finish_reason`` are optional. ``"error": {"kind": "rate_limit",
  "message": "..."}`` in place of ``response`` makes the call fail instead
  (kinds: ``rate_limit``, ``timeout``, ``server``, ``bad_request``).
- ``deltas``: optional, beside ``response``: the pieces its text streamed in,
  as recorded with ``stream_outputs``. A streaming replay gives them in
  order; without them, it gives the content word by word.
- ``request``: the messages that were sent (and ``response_format``, when
  one was asked for), written by the recorder for people to read; replay
  ignores them. Images appear as their digests (type, size, sha256), not their
  bytes; they do not change the lookup.
- A line ``{"cassette": 1, "description": "..."}`` may head the file.

Replay looks answers up by (task, turn), not by call order, so one
``ReplayModel`` serves any number of concurrent runs deterministically.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.errors import CassetteError, ModelCallError
from mesh.models.abortable import pause
from mesh.models.base import (
    ChatMessage,
    DeltaSink,
    Model,
    ModelResponse,
    TokenUsage,
    ToolCall,
)
from mesh.text import clip

if TYPE_CHECKING:
    from mesh.tools.base import Tool

__all__ = ["Cassette", "CassetteEntry", "RecordingModel", "ReplayModel", "conversation_key"]

CASSETTE_VERSION = 1
_RETRYABLE_ERRORS = {"rate_limit": True, "timeout": True, "server": True, "bad_request": False}


@dataclass(frozen=True)
class CassetteEntry:
    task: str | None
    turn: int
    response: ModelResponse | None
    error: Mapping[str, str] | None = None
    deltas: tuple[str, ...] = ()
    """The pieces the answer's text streamed in, when it was recorded streaming."""

    def replay(self) -> ModelResponse:
        if self.error is not None:
            kind = self.error.get("kind", "server")
            raise ModelCallError(
                f"replayed {kind} error: {self.error.get('message', kind)}",
                retryable=_RETRYABLE_ERRORS.get(kind, False),
            )
        assert self.response is not None
        return self.response

    def stream(self, on_delta: DeltaSink) -> None:
        """Give the answer's text to ``on_delta`` in the pieces it streamed in (recorded,
        or else word by word), as a model streaming it would."""
        text = self.response.message.content if self.response is not None else None
        for piece in self.deltas or split_words(text or ""):
            on_delta(piece)


def split_words(text: str) -> list[str]:
    """``text`` in pieces of a word each, with the space before it: joined, ``text``."""
    return re.findall(r"\s*\S+|\s+$", text)


def conversation_key(messages: Sequence[ChatMessage]) -> tuple[str | None, int]:
    """(task, turn) of a request: its first user message and how many
    assistant messages it already holds."""
    task = next((m.content for m in messages if m.role == "user"), None)
    turn = sum(1 for m in messages if m.role == "assistant")
    return task, turn


class Cassette:
    """The parsed entries of a cassette file, indexed by (task, turn)."""

    def __init__(self, entries: Iterable[CassetteEntry], description: str = "") -> None:
        self.entries = list(entries)
        self.description = description
        self._index: dict[tuple[str | None, int], CassetteEntry] = {}
        for entry in self.entries:
            self._index.setdefault((entry.task, entry.turn), entry)

    @classmethod
    def load(cls, path: str | Path) -> Cassette:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise CassetteError(f"cannot read cassette {path}: {err}") from err
        return cls.parse(lines, source=str(path))

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "<cassette>") -> Cassette:
        entries: list[CassetteEntry] = []
        description = ""
        next_turn: dict[str | None, int] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if "cassette" in data:
                    description = str(data.get("description", ""))
                    continue
                entry = _entry(data, next_turn)
            except (ValueError, KeyError, TypeError) as err:
                raise CassetteError(f"{source}:{number}: not a cassette entry: {err}") from err
            next_turn[entry.task] = entry.turn + 1
            entries.append(entry)
        return cls(entries, description)

    @classmethod
    def from_responses(
        cls, responses: Iterable[ModelResponse | str], task: str | None = None
    ) -> Cassette:
        """A one-task cassette from responses in order (handy in tests)."""
        entries = []
        for turn, response in enumerate(responses):
            if isinstance(response, str):
                response = ModelResponse(ChatMessage(role="assistant", content=response))
            entries.append(CassetteEntry(task=task, turn=turn, response=response))
        return cls(entries)

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(e.task for e in self.entries if e.task is not None))

    def lookup(self, task: str | None, turn: int) -> CassetteEntry:
        entry = self._index.get((task, turn)) or self._index.get((None, turn))
        if entry is not None:
            return entry
        turns = sum(1 for e in self.entries if e.task in (task, None))
        if turns:
            raise CassetteError(
                f"cassette has {turns} recorded turn(s) for this task; the agent asked for "
                f"turn {turn + 1}"
            )
        shown = "<none>" if task is None else repr(clip(task, 80))
        raise CassetteError(
            f"cassette has no recording for task {shown}; it knows {self.tasks or 'none'}"
        )


def _entry(data: dict[str, Any], next_turn: dict[str | None, int]) -> CassetteEntry:
    task = data.get("task")
    turn = int(data["turn"]) if "turn" in data else next_turn.get(task, 0)
    if "error" in data:
        return CassetteEntry(task=task, turn=turn, response=None, error=dict(data["error"]))
    deltas = tuple(str(piece) for piece in data.get("deltas") or ())
    return CassetteEntry(task=task, turn=turn, response=response_from_dict(data["response"]),
                         deltas=deltas)  # fmt: skip


def response_from_dict(data: Mapping[str, Any]) -> ModelResponse:
    usage = data.get("usage") or {}
    return ModelResponse(
        message=ChatMessage(
            role="assistant",
            content=data.get("content"),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
        ),
        usage=TokenUsage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
        model_id=str(data.get("model", "")),
        finish_reason=data.get("finish_reason"),
    )


def response_to_dict(response: ModelResponse) -> dict[str, Any]:
    message = response.message
    return {
        "content": message.content,
        "tool_calls": [call.to_dict() for call in message.tool_calls],
        "usage": response.usage.to_dict(),
        "model": response.model_id,
        "finish_reason": response.finish_reason,
    }


class ReplayModel:
    """A ``Model`` that answers from a cassette (see the module docstring)."""

    def __init__(
        self,
        cassette: str | Path | Cassette,
        *,
        model_id: str = "replay",
        latency_s: float = 0.0,
    ) -> None:
        self.cassette = cassette if isinstance(cassette, Cassette) else Cassette.load(cassette)
        self.model_id = model_id
        self.latency_s = latency_s
        self._calls = 0
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """How many model calls were replayed."""
        return self._calls

    def generate(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
        on_delta: DeltaSink | None = None,
    ) -> ModelResponse:
        task, turn = conversation_key(messages)
        entry = self.cassette.lookup(task, turn)
        with self._lock:
            self._calls += 1
        if self.latency_s:
            pause(self.latency_s)
        response = entry.replay()
        if on_delta is not None:
            entry.stream(on_delta)
        if not response.model_id:
            response = ModelResponse(
                response.message, response.usage, self.model_id, response.finish_reason
            )
        return response


class RecordingModel:
    """Wraps any model and appends every call to a cassette file."""

    def __init__(self, model: Model, path: str | Path, description: str = "") -> None:
        self.model = model
        self.model_id = model.model_id
        self.path = Path(path)
        self._lock = threading.Lock()
        if not self.path.exists() or self.path.stat().st_size == 0:
            header = {"cassette": CASSETTE_VERSION, "description": description}
            self.path.write_text(json.dumps(header) + "\n", encoding="utf-8")

    def generate(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        **options: Any,
    ) -> ModelResponse:
        deltas: list[str] = []
        if (on_delta := options.get("on_delta")) is not None:

            def recorded(piece: str) -> None:
                deltas.append(piece)
                on_delta(piece)

            options["on_delta"] = recorded
        response = self.model.generate(messages, tools=tools, stop=stop, **options)
        task, turn = conversation_key(messages)
        line: dict[str, Any] = {"task": task, "turn": turn, "response": response_to_dict(response)}
        if deltas:
            line["deltas"] = deltas
        line["request"] = [m.to_dict(image_data=False) for m in messages]  # images: digests
        if options.get("response_format") is not None:
            line["response_format"] = options["response_format"]
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return response
