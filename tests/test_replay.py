"""Cassettes, the replay model and the recording wrapper."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from mesh import Cassette, ChatMessage, ModelResponse, RecordingModel, ReplayModel, TokenUsage
from mesh.errors import CassetteError, ModelCallError
from mesh.models import ToolCall


def conversation(task: str, turns: int) -> list[ChatMessage]:
    messages = [ChatMessage("system", "sys"), ChatMessage("user", task)]
    for i in range(turns):
        messages += [ChatMessage("assistant", f"a{i}"), ChatMessage("user", f"obs{i}")]
    return messages


def write_cassette(path: Path, lines: Sequence[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_replay_looks_up_by_task_and_turn(tmp_path: Path) -> None:
    path = write_cassette(
        tmp_path / "c.jsonl",
        [
            {"cassette": 1, "description": "two tasks"},
            {
                "task": "A",
                "response": {"content": "A0", "usage": {"input_tokens": 5, "output_tokens": 2}},
            },
            {"task": "B", "response": {"content": "B0"}},
            {
                "task": "A",
                "response": {
                    "content": "A1",
                    "tool_calls": [{"id": "c", "name": "f", "arguments": {"n": 1}}],
                },
            },
        ],
    )
    model = ReplayModel(path)
    assert model.cassette.description == "two tasks"
    assert model.cassette.tasks == ["A", "B"]
    # Order of calls does not matter: answers depend on the conversation.
    assert model.generate(conversation("A", 1)).message.tool_calls == (
        ToolCall("c", "f", '{"n": 1}'),
    )
    assert model.generate(conversation("B", 0)).message.content == "B0"
    first = model.generate(conversation("A", 0))
    assert first.message.content == "A0" and first.usage == TokenUsage(5, 2)
    assert first.model_id == "replay" and model.calls == 3


def test_replay_misses_are_clear(tmp_path: Path) -> None:
    model = ReplayModel(Cassette.from_responses(["only"], task="A"))
    with pytest.raises(CassetteError, match=r"has 1 recorded turn.*asked for turn 2"):
        model.generate(conversation("A", 1))
    with pytest.raises(CassetteError, match="no recording for task 'Z'; it knows \\['A'\\]"):
        model.generate(conversation("Z", 0))


def test_untasked_entries_answer_any_task() -> None:
    model = ReplayModel(Cassette.from_responses(["x", "y"]))
    assert model.generate(conversation("anything", 1)).message.content == "y"


def test_injected_errors(tmp_path: Path) -> None:
    path = write_cassette(
        tmp_path / "e.jsonl",
        [
            {"task": "A", "error": {"kind": "rate_limit", "message": "slow down"}},
            {"task": "B", "error": {"kind": "bad_request"}},
        ],
    )
    model = ReplayModel(path)
    with pytest.raises(ModelCallError, match="slow down") as err:
        model.generate(conversation("A", 0))
    assert err.value.retryable
    with pytest.raises(ModelCallError) as err:
        model.generate(conversation("B", 0))
    assert not err.value.retryable


def test_bad_cassettes(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match="cannot read cassette"):
        ReplayModel(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"task": "A", "response": {}}\nnot json\n')
    with pytest.raises(CassetteError, match=r"bad\.jsonl:2: not a cassette entry"):
        ReplayModel(tmp_path / "bad.jsonl")


def test_recording_round_trips_through_replay(tmp_path: Path) -> None:
    source = ReplayModel(
        Cassette.from_responses(
            [
                ModelResponse(
                    ChatMessage("assistant", "r0", (ToolCall("id1", "f", "{}"),)),
                    TokenUsage(7, 3),
                    "gpt-x",
                    "tool_calls",
                ),
                "r1",
            ]
        )
    )
    path = tmp_path / "rec.jsonl"
    recorder = RecordingModel(source, path, description="test")
    for turns in range(2):
        recorder.generate(conversation("T", turns))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"cassette": 1, "description": "test"}
    assert [(line["task"], line["turn"]) for line in lines[1:]] == [("T", 0), ("T", 1)]
    assert lines[1]["request"][1] == {"role": "user", "content": "T"}
    replayed = ReplayModel(path)
    first = replayed.generate(conversation("T", 0))
    assert first == ModelResponse(
        ChatMessage("assistant", "r0", (ToolCall("id1", "f", "{}"),)),
        TokenUsage(7, 3),
        "gpt-x",
        "tool_calls",
    )
    assert replayed.generate(conversation("T", 1)).message.content == "r1"
