"""What an MCP tool's answer becomes for the agent.

A tool that declares an ``outputSchema`` answers ``structuredContent`` (the
SDK has already checked it against the schema), which is returned as a dict.
Otherwise the answer is its content as text: text blocks joined by newlines,
with a short placeholder for images, audio and binary resources (a model
reading an observation cannot use the bytes). An ``isError`` answer is a
``ToolExecutionError`` carrying the server's own text, so the model can read
what went wrong; like every error message, it is clipped.

Results are bounded: text beyond ``MAX_RESULT_CHARS`` is cut with a note
saying so, and structured content that large is refused (a dict cannot be
cut without changing what it says).
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types

from mesh.errors import ToolExecutionError
from mesh.text import clip

__all__ = ["MAX_RESULT_CHARS", "result_value"]

MAX_RESULT_CHARS = 1_000_000
MAX_ERROR_CHARS = 2_000


def result_value(where: str, result: types.CallToolResult, structured: bool) -> Any:
    """``where`` names the tool in errors (``mcp server files: tool read_file``)."""
    if result.is_error:
        message = _text(result.content) or "no message"
        raise ToolExecutionError(f"{where} failed: {clip(message, MAX_ERROR_CHARS)}")
    content = result.structured_content
    if structured and content is not None:
        size = len(json.dumps(content, default=str))
        if size > MAX_RESULT_CHARS:
            raise ToolExecutionError(
                f"{where}: its structured result is {size} characters of JSON, more than the "
                f"{MAX_RESULT_CHARS} smolmesh accepts"
            )
        return content
    text = _text(result.content)
    if not text and content is not None:
        text = json.dumps(content, default=str)
    if len(text) > MAX_RESULT_CHARS:
        text = (f"{text[:MAX_RESULT_CHARS]}\n[clipped: the result was {len(text)} characters; "
                f"smolmesh keeps the first {MAX_RESULT_CHARS}]")  # fmt: skip
    return text


def _text(blocks: list[types.ContentBlock]) -> str:
    return "\n".join(_block_text(block) for block in blocks)


def _block_text(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind} ({block.mime_type}, {len(block.data) * 3 // 4} bytes) not shown]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {clip(str(block.uri), 500)}]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return resource.text
        return f"[binary resource {clip(str(resource.uri), 500)} ({resource.mime_type}) not shown]"
    return f"[{type(block).__name__} not shown]"
