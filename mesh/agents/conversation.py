"""Conversations: the earlier turns a run continues from.

``agent.run(task, reset=False)`` continues the agent's last conversation, as
in smolagents; a server passes the turns it keeps instead (``history=``),
since one agent object serves many conversations at once. A ``Turn`` is one
earlier task, its steps as the model read them then, and its final answer. It
holds text only and goes to and from plain JSON, so that a store can keep it.

The model reads each earlier turn before the current task: the task as a
user message, the turn's steps, then its answer as an assistant message.
What it reads is bounded (the agent's ``max_history_turns`` and
``max_history_chars``, 20 and 200,000 by default): at most that many turns,
of at most that many characters (of their JSON form) in all. Beyond either
bound the oldest whole turns are dropped, not summarised: the model never
reads half a turn, and a conversation that goes on long enough forgets its
beginning. A turn is clipped to the character bound when the run ends, so
the newest always fits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from mesh import untrusted_json
from mesh.models.base import ChatMessage, ToolCall
from mesh.text import clip

__all__ = ["ANSWER_PREFIX", "Turn", "answer_text", "keep_recent"]

ANSWER_PREFIX = "Final answer: "
MIN_CLIP_CHARS = 64
"""Texts are not cut shorter than this; a turn that still does not fit loses its steps."""
_ROLES = frozenset({"user", "assistant", "tool"})  # never "system": a turn cannot instruct


@dataclass(frozen=True)
class Turn:
    """One earlier task of a conversation, as the model reads it again."""

    task: str
    answer: str
    """The final answer as text (JSON for anything but a string)."""
    messages: tuple[ChatMessage, ...] = ()
    """Its steps as the model read them: assistant, user and tool messages."""
    steps: int = 0
    """How many steps the run took."""

    def __post_init__(self) -> None:
        """A turn holds text only: images are dropped from its messages (their text still
        says what was shown), and a later turn reads the earlier task's text, not the images
        it came with. Bytes that every later run would send again stay out of the stores."""
        if any(message.images for message in self.messages):
            texts = tuple(replace(m, images=()) for m in self.messages)
            object.__setattr__(self, "messages", texts)

    def to_messages(self) -> list[ChatMessage]:
        """How the turn reads in a later run's conversation."""
        return [
            ChatMessage(role="user", content=self.task),
            *self.messages,
            ChatMessage(role="assistant", content=ANSWER_PREFIX + self.answer),
        ]

    @property
    def chars(self) -> int:
        """Its size: the characters of its JSON form."""
        return len(self.to_json())

    def to_json(self) -> str:
        data = {"task": self.task, "answer": self.answer, "steps": self.steps,
                "messages": [m.to_dict() for m in self.messages]}  # fmt: skip
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Turn:
        """The turn ``to_json`` wrote; ValueError for anything else."""
        data = untrusted_json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise ValueError("a turn is an object with a list of messages")
        steps = data.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError("a turn's steps must be a count")
        return cls(
            task=_text(data, "task"),
            answer=_text(data, "answer"),
            messages=tuple(_message(m) for m in data["messages"]),
            steps=steps,
        )

    def clipped(self, max_chars: int) -> Turn:
        """This turn within ``max_chars`` (see ``chars``): its long texts cut, halving the cut
        until it fits; a turn of too many steps for that keeps only its task and answer.
        (Below about 256 characters, nothing fits: the smallest turn comes back.)"""
        if self.chars <= max_chars:
            return self
        turn = self
        for keep_steps, floor in ((True, MIN_CLIP_CHARS), (False, 0)):
            cap = max_chars // 4
            while True:
                turn = self._cut(cap, keep_steps=keep_steps)
                if turn.chars <= max_chars:
                    return turn
                if cap <= floor:
                    break
                cap //= 2
        return turn

    def _cut(self, cap: int, *, keep_steps: bool) -> Turn:
        """Task and answer cut to ``cap`` characters, each text of its steps to half that."""
        messages = tuple(_clip_message(m, cap // 2) for m in self.messages) if keep_steps else ()
        return replace(self, task=clip(self.task, cap), answer=clip(self.answer, cap),
                       messages=messages)  # fmt: skip


def keep_recent(turns: Sequence[Turn], max_turns: int, max_chars: int) -> list[Turn]:
    """The newest whole turns, at most ``max_turns`` of at most ``max_chars`` in all; the
    older ones are dropped (even when an older one alone would fit)."""
    kept: list[Turn] = []
    total = 0
    for turn in reversed(turns[-max_turns:] if max_turns > 0 else ()):
        total += turn.chars
        if total > max_chars:
            break
        kept.append(turn)
    return kept[::-1]


def answer_text(value: Any) -> str:
    """A final answer as the model reads it again: a string as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"a turn's {key} must be a string")
    return value


def _message(data: Any) -> ChatMessage:
    if not isinstance(data, dict) or data.get("role") not in _ROLES:
        raise ValueError("a turn's message needs a role: user, assistant or tool")
    content, call_id = data.get("content"), data.get("tool_call_id")
    calls = data.get("tool_calls") or []
    if not isinstance(content, str | None) or not isinstance(call_id, str | None):
        raise ValueError("a message's content and tool_call_id must be strings")
    if not isinstance(calls, list) or not all(
        isinstance(c, dict) and all(isinstance(c.get(k), str) for k in ("id", "name", "arguments"))
        for c in calls
    ):
        raise ValueError("a message's tool calls need a string id, name and arguments")
    return ChatMessage(
        role=data["role"],
        content=content,
        tool_calls=tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in calls),
        tool_call_id=call_id,
    )


def _clip_message(message: ChatMessage, cap: int) -> ChatMessage:
    calls = tuple(
        ToolCall(clip(c.id, cap), clip(c.name, cap), _clip_arguments(c.arguments, cap))
        for c in message.tool_calls
    )
    call_id = None if message.tool_call_id is None else clip(message.tool_call_id, cap)
    content = None if message.content is None else clip(message.content, cap)
    return ChatMessage(message.role, content, calls, call_id)


def _clip_arguments(arguments: str, cap: int) -> str:
    """Arguments cut short stay a JSON object: providers parse them."""
    if len(arguments) <= cap:
        return arguments
    return json.dumps({"clipped_arguments": clip(arguments, cap)}, ensure_ascii=False)
