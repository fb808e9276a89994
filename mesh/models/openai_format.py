"""Chat messages in the OpenAI wire format, both ways.

LiteLLM takes this format for every provider, and the replay server speaks
it, so the conversion lives here once.
"""

from __future__ import annotations

from typing import Any

from mesh.models.base import ChatMessage, ToolCall

__all__ = ["from_openai_message", "to_openai_message", "to_openai_tool_calls"]


def to_openai_tool_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def to_openai_message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = to_openai_tool_calls(message.tool_calls)
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def from_openai_message(data: dict[str, Any]) -> ChatMessage:
    content = data.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = tuple(
        ToolCall(
            id=c.get("id", ""), name=c["function"]["name"], arguments=c["function"]["arguments"]
        )
        for c in data.get("tool_calls") or ()
    )
    return ChatMessage(
        role=data["role"], content=content, tool_calls=calls, tool_call_id=data.get("tool_call_id")
    )
