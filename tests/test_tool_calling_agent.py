"""ToolCallingAgent: structured calls, validation, concurrency, errors."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mesh import ChatMessage, ModelResponse, ToolCall, ToolCallingAgent, factorial, tool
from mesh.agents import AgentEvent, RunFinished, StepFailed, ToolCallFinished
from mesh.errors import ErrorInfo
from mesh.models import TokenUsage
from tests.support import calls, scripted

barrier = threading.Barrier(3, timeout=5)


@tool
def meet(name: str) -> str:
    """Wait until two other callers arrive, proving the calls overlap in time.

    Args:
        name: Who arrives.
    """
    barrier.wait()
    return f"{name} met the others"


def test_several_calls_in_one_step_run_concurrently() -> None:
    barrier.reset()
    agent = ToolCallingAgent(
        [meet],
        scripted(
            calls(("meet", {"name": "a"}), ("meet", {"name": "b"}), ("meet", {"name": "c"})),
            calls(("final_answer", {"answer": "all met"})),
        ),
    )
    assert agent.run("Meet.") == "all met"
    step = agent.memory.steps[0]  # type: ignore[union-attr]
    assert [r.result for r in step.tool_calls] == [
        "a met the others",
        "b met the others",
        "c met the others",
    ]
    # Results went back as tool messages, one per call id, in call order.
    second_input = agent.memory.steps[1].model_input  # type: ignore[union-attr]
    tool_messages = [m for m in second_input if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ["id_0_meet", "id_1_meet", "id_2_meet"]
    assert tool_messages[1].content == "b met the others"


def test_bad_calls_become_tool_errors_the_model_reads() -> None:
    broken_json = ModelResponse(
        ChatMessage("assistant", None, (ToolCall("j1", "factorial", '{"n": 5'),)), TokenUsage()
    )
    agent = ToolCallingAgent(
        [factorial],
        scripted(
            broken_json,
            calls(("factorial", {"n": "five"})),
            calls(("fctorial", {"n": 5})),
            calls(("factorial", {"n": 5, "extra": 1})),
            "I am done thinking.",  # no tool call at all
            calls(("factorial", {"n": 5})),
            calls(("final_answer", {"answer": 120})),
        ),
    )
    events = list(agent.run("5!", stream=True))
    assert agent.memory.steps[-1].final_answer == 120  # type: ignore[union-attr]
    errors = [e.error for e in events if isinstance(e, ToolCallFinished) and e.error]
    assert [e.reason for e in errors] == ["model_output_error", "tool_invalid_arguments",
                                          "tool_not_found", "tool_invalid_arguments"]  # fmt: skip
    assert "not valid JSON" in errors[0].message
    assert "argument 'n': expected integer, got string" in errors[1].message
    assert (
        "there is no tool named 'fctorial'. Available tools: factorial, final_answer"
        in errors[2].message
    )
    assert "unknown argument 'extra'" in errors[3].message
    failed = [e for e in events if isinstance(e, StepFailed)]
    assert len(failed) == 1 and "you did not call any tool" in failed[0].error.message
    assert failed[0].error.reason == "model_output_error"
    # The model saw each error as the content of the tool message for its call.
    inputs = agent.memory.steps[-1].model_input  # type: ignore[union-attr]
    tool_texts = [m.content or "" for m in inputs if m.role == "tool"]
    assert tool_texts[0].startswith("Error: the arguments of your call to factorial")
    assert tool_texts[-1] == "120"


def test_json_calls_written_as_text_are_understood() -> None:
    agent = ToolCallingAgent(
        [factorial],
        scripted(
            'Calling: {"name": "factorial", "arguments": {"n": 4}}',
            '{"name": "final_answer", "arguments": {"answer": "24"}}',
        ),
    )
    assert agent.run("4!") == "24"
    first = agent.memory.steps[0]  # type: ignore[union-attr]
    assert first.model_output is not None
    assert first.model_output.tool_calls == (ToolCall("call_1_0", "factorial", '{"n": 4}'),)


def test_duplicate_or_missing_call_ids_are_made_unique() -> None:
    agent = ToolCallingAgent(
        [factorial],
        scripted(
            calls(
                ("factorial", {"n": 1}, "same"),
                ("factorial", {"n": 2}, "same"),
                ("factorial", {"n": 3}, ""),
            ),
            calls(("final_answer", {"answer": 1})),
        ),
    )
    agent.run("t")
    ids = [r.call_id for r in agent.memory.steps[0].tool_calls]  # type: ignore[union-attr]
    assert ids == ["same", "call_1_1", "call_1_2"]


def test_final_answer_alongside_other_calls_runs_them_first() -> None:
    agent = ToolCallingAgent(
        [factorial],
        scripted(
            calls(("factorial", {"n": 3}), ("final_answer", {"answer": "done"})),
        ),
    )
    assert agent.run("t") == "done"
    assert [r.result for r in agent.memory.steps[0].tool_calls] == [6, "done"]  # type: ignore[union-attr]


def test_invalid_final_answer_call_does_not_end_the_run() -> None:
    agent = ToolCallingAgent(
        [],
        scripted(
            calls(("final_answer", {"result": 1})),
            calls(("final_answer", {"answer": 1})),
        ),
    )
    assert agent.run("t") == 1
    assert len(agent.memory.steps) == 2  # type: ignore[union-attr]


def test_tools_are_sent_to_the_model_as_schemas() -> None:
    agent = ToolCallingAgent([factorial], scripted(calls(("final_answer", {"answer": 1}))))
    names = [t.name for t in agent._model_tools(agent.toolbox()) or []]
    assert names == ["factorial", "final_answer"]
    assert "factorial(n: integer) -> integer" in agent.system_prompt()


def test_a_run_ended_by_a_bug_is_recorded_as_failed() -> None:
    model = scripted("never read")

    def broken(*args: Any, **kwargs: Any) -> ModelResponse:
        raise RuntimeError("a bug in a model wrapper")

    model.generate = broken  # type: ignore[method-assign]
    events: list[AgentEvent] = []
    with pytest.raises(RuntimeError):
        events.extend(ToolCallingAgent([], model).run("t", stream=True))
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert finished[0].error == ErrorInfo("internal", "RuntimeError: a bug in a model wrapper")
