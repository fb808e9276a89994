"""Reading what a model wrote: code blocks and JSON tool calls.

Each parser raises ``ModelOutputError`` with a message addressed to the
model (what was expected, what was found), because that message becomes its
next observation.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from mesh import untrusted_json
from mesh.errors import ModelOutputError
from mesh.models.base import ToolCall

__all__ = ["extract_code", "parse_arguments", "tool_calls_from_text"]

_FENCE = re.compile(
    r"```[ \t]*(python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE
)


def extract_code(text: str | None) -> str:
    """The Python code of a model answer: every fenced python block, joined."""
    blocks = [m.group(2) for m in _FENCE.finditer(text or "") if m.group(2).strip()]
    if not blocks:
        raise ModelOutputError(
            "no code block found. Answer with your reasoning, then one code block:\n"
            "```python\n# your code\n```\nand call final_answer(...) when you have the answer."
        )
    return "\n\n".join(block.strip("\n") for block in blocks)


def parse_arguments(call: ToolCall) -> dict[str, Any]:
    """A tool call's JSON arguments as a dict."""
    raw = call.arguments.strip() or "{}"
    try:
        value = untrusted_json.loads(raw)
    except json.JSONDecodeError as err:
        raise ModelOutputError(
            f"the arguments of your call to {call.name} are not valid JSON ({err.msg} at "
            f"position {err.pos}): {raw[:200]}"
        ) from err
    if isinstance(value, str):  # some models double-encode
        with contextlib.suppress(ValueError):
            value = untrusted_json.loads(value)
    if not isinstance(value, dict):
        raise ModelOutputError(
            f"the arguments of your call to {call.name} must be a JSON object, "
            f"got {type(value).__name__}"
        )
    return value


def tool_calls_from_text(text: str | None, step: int) -> tuple[ToolCall, ...]:
    """Tool calls written as JSON in plain text, for models without native tool calling.

    Accepts ``{"name": ..., "arguments": {...}}`` (or a list of them), bare or
    in a fenced block. Returns () when the text holds no such object.
    """
    for candidate in _json_candidates(text or ""):
        try:
            value = untrusted_json.loads(candidate)
        except ValueError:
            continue
        items = value if isinstance(value, list) else [value]
        if items and all(isinstance(i, dict) and "name" in i for i in items):
            return tuple(
                ToolCall(
                    id=f"call_{step}_{n}",
                    name=str(item["name"]),
                    arguments=json.dumps(item.get("arguments", item.get("parameters", {}))),
                )
                for n, item in enumerate(items)
            )
    return ()


def _json_candidates(text: str) -> list[str]:
    fenced = re.findall(r"```(?:json)?\s*\n(.*?)```", text, re.DOTALL)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    bare = [text[start : max(text.rfind("}"), text.rfind("]")) + 1]] if start >= 0 else []
    return [*fenced, *bare]
