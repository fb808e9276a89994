"""Reading code blocks and tool calls out of model text."""

from __future__ import annotations

import json

import pytest

from mesh.agents.parsing import extract_code, parse_arguments, tool_calls_from_text
from mesh.errors import ModelOutputError
from mesh.models import ToolCall


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Thought.\n```python\nx = 1\nprint(x)\n```", "x = 1\nprint(x)"),
        ("```py\ny = 2\n```\nmore text", "y = 2"),
        ("```\nz = 3\n```", "z = 3"),
        ("```python\na = 1\n```\nthen\n```python\nb = 2\n```", "a = 1\n\nb = 2"),
        ("cut off:\n```python\nfinal_answer(1)\n", "final_answer(1)"),
    ],
)
def test_extract_code(text: str, code: str) -> None:
    assert extract_code(text) == code


@pytest.mark.parametrize("text", [None, "", "The answer is 4.", "```python\n\n```"])
def test_extract_code_without_a_block_tells_the_model_the_format(text: str | None) -> None:
    with pytest.raises(ModelOutputError, match=r"(?s)no code block found.*```python"):
        extract_code(text)


def test_parse_arguments() -> None:
    assert parse_arguments(ToolCall("1", "f", '{"n": 5}')) == {"n": 5}
    assert parse_arguments(ToolCall("1", "f", "")) == {}
    assert parse_arguments(ToolCall("1", "f", json.dumps('{"n": 5}'))) == {"n": 5}
    with pytest.raises(ModelOutputError, match="not valid JSON"):
        parse_arguments(ToolCall("1", "f", '{"n": 5'))
    with pytest.raises(ModelOutputError, match="must be a JSON object, got list"):
        parse_arguments(ToolCall("1", "f", "[1, 2]"))


def test_tool_calls_from_text() -> None:
    calls = tool_calls_from_text('I will call it: {"name": "factorial", "arguments": {"n": 4}}', 3)
    assert calls == (ToolCall("call_3_0", "factorial", '{"n": 4}'),)
    fenced = '```json\n[{"name": "a", "arguments": {}}, {"name": "b", "parameters": {"x": 1}}]\n```'
    assert [c.name for c in tool_calls_from_text(fenced, 1)] == ["a", "b"]
    assert tool_calls_from_text(fenced, 1)[1].arguments == '{"x": 1}'
    assert tool_calls_from_text("no json here", 1) == ()
    assert tool_calls_from_text('{"answer": 4}', 1) == ()
