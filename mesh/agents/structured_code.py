"""Code answers as JSON (smolagents' ``use_structured_outputs_internally``).

A model that supports OpenAI-style structured outputs can be held to one JSON
object per step, ``{"thought": "...", "code": "..."}``: the provider enforces
the shape, so a missing or unclosed code fence no longer costs a step. The
thought stays in the answer, which the agent keeps as it came (the model reads
its own JSON back at the next step).

Models still stray in two ways often enough to be worth accepting rather than
failing the step: they wrap the object in a ```json fence, or fence the code
inside the ``code`` string. Anything else that is wrong raises
``ModelOutputError`` with a message addressed to the model, since it becomes
the model's next observation; whatever it quotes of the model's text is
clipped, so a runaway answer cannot flood the conversation.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from mesh import untrusted_json
from mesh.agents.parsing import extract_code
from mesh.errors import ModelOutputError
from mesh.text import clip

__all__ = ["SCHEMA_NAME", "ThoughtAndCode", "read_answer", "response_format"]

SCHEMA_NAME = "ThoughtAndCode"
EXAMPLE = '{"thought": "what you will do and why", "code": "# the Python code to run"}'
_QUOTED_CHARS = 200

_JSON_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL | re.IGNORECASE)
_FENCE_LINE = re.compile(r"^[ \t]*```", re.MULTILINE)


@dataclass(frozen=True)
class ThoughtAndCode:
    """One step's answer: why, then what to run."""

    thought: str
    code: str


def response_format() -> dict[str, Any]:
    """The OpenAI-style ``response_format`` of a step's answer. Strict mode needs every
    property required and no others allowed. A new dict each call: the model layer may
    add to what it sends, and must not change the next request's."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": SCHEMA_NAME,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "thought": {
                        "type": "string",
                        "description": "What you will do in this step, and why.",
                    },
                    "code": {
                        "type": "string",
                        "description": "The Python code to run, without code block fences.",
                    },
                },
                "required": ["thought", "code"],
                "additionalProperties": False,
            },
        },
    }


def read_answer(text: str | None) -> ThoughtAndCode:
    """The thought and code of a model's JSON answer."""
    value = _parse(_unfenced_json((text or "").strip()))
    if not isinstance(value, dict):
        raise ModelOutputError(
            f"your answer must be a JSON object, not a JSON {_json_type(value)}. "
            f"Answer with: {EXAMPLE}"
        )
    code, thought = value.get("code"), value.get("thought", "")
    if not isinstance(code, str) or not isinstance(thought, str):
        raise ModelOutputError(
            f'your answer must have two strings, "thought" and "code"; it has '
            f"{_fields(value)}. Answer with: {EXAMPLE}"
        )
    code = _unfenced_code(code).strip("\n")
    if not code.strip():
        raise ModelOutputError(
            'the "code" of your answer is empty: put the Python code to run in it, and call '
            "final_answer(...) in it when you have the answer."
        )
    return ThoughtAndCode(thought=thought, code=code)


def _unfenced_json(text: str) -> str:
    """The object itself, when the whole answer is one fenced block."""
    if text.startswith("```") and (fenced := _JSON_FENCE.match(text)):
        return fenced.group(1).strip()
    return text


def _parse(text: str) -> Any:
    if not text:
        raise ModelOutputError(f"your answer was empty. Answer with one JSON object: {EXAMPLE}")
    try:
        return untrusted_json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelOutputError(
            f"your answer is not valid JSON ({err.msg} at position {err.pos}). Answer with one "
            f"JSON object and nothing around it: {EXAMPLE}\nYour answer began: "
            f"{clip(text, _QUOTED_CHARS, one_line=True)}"
        ) from err


def _unfenced_code(code: str) -> str:
    """The code, out of the ```python fence some models put it in anyway. Only a line that
    opens a fence counts: code that merely mentions backticks is left as it is."""
    if not _FENCE_LINE.search(code):
        return code
    try:
        return extract_code(code)
    except ModelOutputError:  # a fence, but not around python: let the code fail as written
        return code


def _fields(value: dict[str, Any]) -> str:
    """The answer's fields and their JSON types, bounded (a model may send any keys)."""
    if not value:
        return "no fields"
    first = itertools.islice(value.items(), 10)
    listed = ", ".join(f"{key!r}: {_json_type(item)}" for key, item in first)
    return clip(listed, _QUOTED_CHARS)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
