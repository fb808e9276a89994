"""The model contract: chat messages in, one assistant message out.

Plain frozen dataclasses, independent of any provider's wire format, so that
agents, cassettes and (later) the protobuf edge convert at their borders and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from mesh.models.images import Image

if TYPE_CHECKING:
    from mesh.tools.base import Tool

__all__ = [
    "ChatMessage",
    "DeltaSink",
    "Model",
    "ModelResponse",
    "Role",
    "TokenUsage",
    "ToolCall",
    "shared_prefix",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the model wrote it; ``arguments`` stays the raw JSON text
    so that malformed arguments reach the agent as-is and can be reported."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        args = data.get("arguments", "{}")
        return cls(id=str(data["id"]), name=str(data["name"]), arguments=_as_json_text(args))


def _as_json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value)


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    images: tuple[Image, ...] = ()
    """Images the model sees after the text (a user message's: the task's, or those tools
    returned); see ``mesh.models.images``."""

    def to_dict(self, *, image_data: bool = True) -> dict[str, Any]:
        """The message as JSON; its images with their bytes (base64), or, without
        ``image_data``, as their digests only (recordings: a few dozen bytes each)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.images:
            out["images"] = [i.to_dict() if image_data else i.digest() for i in self.images]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatMessage:
        """What ``to_dict`` wrote with the images' bytes (ValueError for a digest alone)."""
        return cls(
            role=data["role"],
            content=data.get("content"),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            tool_call_id=data.get("tool_call_id"),
            images=tuple(Image.from_dict(i) for i in data.get("images") or ()),
        )


def shared_prefix(before: Sequence[ChatMessage], now: Sequence[ChatMessage]) -> int:
    """How many of ``now``'s first messages ``before`` had too, in the same places: a
    prompt repeats its run's earlier messages, which records need not repeat."""
    kept = 0
    for old, new in zip(before, now, strict=False):
        if old != new:  # e.g. a system prompt rebuilt after a tool change: sent again
            break
        kept += 1
    return kept


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )

    def to_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass(frozen=True)
class ModelResponse:
    message: ChatMessage
    usage: TokenUsage = field(default_factory=TokenUsage)
    model_id: str = ""
    finish_reason: str | None = None
    cached: bool = False
    """Answered from a response cache, not by the model."""


DeltaSink = Callable[[str], None]
"""Takes each piece of an answer's text as the model generates it (``stream_outputs``)."""


@runtime_checkable
class Model(Protocol):
    """Anything that turns a conversation into the next assistant message.

    Agents pass ``response_format`` and ``on_delta`` only when they use them, so a model
    that supports neither may leave them out of its signature:

    - ``response_format``: an OpenAI-style response format (``{"type": "json_schema",
      ...}``) the answer's content must follow (``use_structured_outputs_internally``).
    - ``on_delta``: called with each piece of the answer's text as it is generated; the
      response returned at the end is the whole answer, with its exact usage.
    """

    model_id: str

    def generate(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] | None = None,
        stop: Sequence[str] | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
        on_delta: DeltaSink | None = None,
    ) -> ModelResponse: ...
