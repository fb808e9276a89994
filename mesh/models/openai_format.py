"""Chat messages in the OpenAI wire format, both ways.

LiteLLM takes this format for every provider, and the replay server speaks
it, so the conversion lives here once.
"""

from __future__ import annotations

from typing import Any

from mesh.errors import InvalidRequestError
from mesh.models.base import ChatMessage, ToolCall
from mesh.models.images import Image, checked_images

__all__ = ["from_openai_message", "to_openai_message", "to_openai_tool_calls"]


def to_openai_tool_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def to_openai_message(message: ChatMessage) -> dict[str, Any]:
    """The message as OpenAI takes it; one with images has content parts: its text, then
    each image as an ``image_url`` part holding a data URL (what multimodal models read)."""
    content: Any = message.content
    if message.images:
        content = [{"type": "text", "text": message.content or ""}, *_image_parts(message)]
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        out["tool_calls"] = to_openai_tool_calls(message.tool_calls)
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _image_parts(message: ChatMessage) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": image.data_url}} for image in message.images]


def from_openai_message(data: dict[str, Any]) -> ChatMessage:
    """The message of OpenAI's format: content parts are its text, and its images (data
    URLs only: an image is never fetched; a bad one is an ``InvalidRequestError``)."""
    content = data.get("content")
    images: tuple[Image, ...] = ()
    if isinstance(content, list):  # content parts: the text ones, then the images
        parts = [p for p in content if isinstance(p, dict)]
        content = "".join(p.get("text", "") for p in parts if p.get("type", "text") == "text")
        images = checked_images(_image_url(p) for p in parts if p.get("type") == "image_url")
    calls = tuple(
        ToolCall(
            id=c.get("id", ""), name=c["function"]["name"], arguments=c["function"]["arguments"]
        )
        for c in data.get("tool_calls") or ()
    )
    return ChatMessage(role=data["role"], content=content, tool_calls=calls,
                       tool_call_id=data.get("tool_call_id"), images=images)  # fmt: skip


def _image_url(part: dict[str, Any]) -> str:
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url.startswith("data:"):
        raise InvalidRequestError("an image_url part must hold a data: URL")
    return url
