"""Small builders for scripted model responses in tests."""

from __future__ import annotations

import json
from typing import Any

from mesh import Cassette, ChatMessage, ModelResponse, ReplayModel, TokenUsage, ToolCall


def code(text: str, thought: str = "Next step.") -> str:
    """A CodeAgent answer: reasoning and one code block."""
    return f"{thought}\n```python\n{text}\n```"


def calls(
    *items: tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str], content: str | None = None
) -> ModelResponse:
    """A ToolCallingAgent answer with native tool calls (name, args[, id])."""
    tool_calls = tuple(
        ToolCall(
            item[2] if len(item) > 2 else f"id_{n}_{item[0]}",  # type: ignore[misc]
            item[0],
            json.dumps(item[1]),
        )
        for n, item in enumerate(items)
    )
    return ModelResponse(ChatMessage("assistant", content, tool_calls), TokenUsage(100, 10))


def scripted(*responses: ModelResponse | str, task: str | None = None) -> ReplayModel:
    """A model that answers turn by turn from ``responses``."""
    resolved = [
        r
        if isinstance(r, ModelResponse)
        else ModelResponse(ChatMessage("assistant", r), TokenUsage(100, 10))
        for r in responses
    ]
    return ReplayModel(Cassette.from_responses(resolved, task=task))
