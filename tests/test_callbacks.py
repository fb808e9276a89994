"""Step callbacks and final-answer checks, as smolagents has them: in process, and on a
specialist served in its own process and called over gRPC (it behaves like a local one)."""

from __future__ import annotations

import logging
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh import CodeAgent, ToolCallingAgent
from mesh.agents import ActionStep, AgentMemory, FinalAnswerStep, StepFailed
from mesh.rpc.client import AgentClient
from tests.support import calls, code, scripted, serving

TASK = "Pick a number of at least ten."


def answers(*values: str) -> list[Any]:
    return [calls(("final_answer", {"answer": value})) for value in values]


def test_list_callbacks_see_every_step_and_the_final_answer_with_the_agent() -> None:
    seen: list[tuple[str, Any]] = []
    agent = ToolCallingAgent(
        [],
        scripted(calls(("final_answer", {"answer": "12"}))),
        step_callbacks=[lambda step, agent: seen.append((type(step).__name__, agent))],
    )
    assert agent.run(TASK) == "12"
    assert seen == [("ActionStep", agent), ("FinalAnswerStep", agent)]


def test_callbacks_keyed_by_step_kind_several_each_one_parameter_or_two() -> None:
    actions: list[int] = []
    finals: list[Any] = []
    agent = CodeAgent(
        [],
        scripted(code("x = 5\nprint(x)"), code("final_answer(x * 3)")),
        executor="unsafe-local",
        step_callbacks={
            ActionStep: [lambda step: actions.append(step.step_number),
                         lambda step, agent: actions.append(-step.step_number)],
            FinalAnswerStep: lambda step: finals.append(step.output),
        },
    )  # fmt: skip
    assert agent.run("t") == 15
    assert actions == [1, -1, 2, -2] and finals == [15]


def test_a_callback_that_raises_is_logged_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after: list[int] = []

    def broken(step: Any) -> None:
        raise RuntimeError("x" * 5000)

    agent = ToolCallingAgent(
        [], scripted(calls(("final_answer", {"answer": "12"}))),
        step_callbacks=[broken, lambda step: after.append(1)],
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mesh.agents"):
        assert agent.run(TASK) == "12"
    assert after == [1, 1]  # the next callback still ran, for both steps
    warnings = [r.getMessage() for r in caplog.records if "step callback broken" in r.getMessage()]
    assert len(warnings) == 2 and all(len(w) < 700 for w in warnings)  # bounded
    assert "RuntimeError" in warnings[0]


def test_a_rejected_final_answer_is_an_error_the_model_reads_and_the_run_goes_on() -> None:
    checked: list[tuple[Any, str]] = []

    def at_least_ten(answer: Any, memory: AgentMemory, agent: Any = None) -> bool:
        checked.append((answer, memory.task))
        assert agent is not None
        return int(answer) >= 10

    model = scripted(*answers("3", "12"))
    agent = ToolCallingAgent([], model, final_answer_checks=[at_least_ten])
    events = list(agent.run(TASK, stream=True))
    assert checked == [("3", TASK), ("12", TASK)]
    failed = [e for e in events if isinstance(e, StepFailed)]
    assert len(failed) == 1 and "rejected by the check at_least_ten" in failed[0].error.message
    assert agent.memory is not None and agent.memory.steps[-1].final_answer == "12"
    second_prompt = agent.memory.steps[1].model_input[-1].content or ""
    assert "rejected by the check at_least_ten" in second_prompt  # what the model read


def test_a_check_that_raises_rejects_the_answer_saying_why() -> None:
    def strict(answer: Any, memory: AgentMemory) -> bool:  # without agent=: also accepted
        raise ValueError(f"not a number: {answer}")

    agent = ToolCallingAgent([], scripted(*answers("three", "3"), "3"),
                             final_answer_checks=[strict], max_steps=2)  # fmt: skip
    result = agent.run(TASK, return_full_result=True)
    assert result.state == "max_steps"  # never accepted: the model's last word is the answer
    errors = [step.error or "" for step in result.steps[:2]]
    assert "check strict failed (ValueError: not a number: three)" in errors[0]


SPECIALIST = """
import json, sys
from mesh import Cassette, ChatMessage, ModelResponse, ReplayModel, TokenUsage, ToolCall
from mesh import ToolCallingAgent, serve

def answer(value):
    call = ToolCall("c", "final_answer", json.dumps({"answer": value}))
    return ModelResponse(ChatMessage("assistant", None, (call,)), TokenUsage(10, 1))

def at_least_ten(answer, memory, agent):
    return int(answer) >= 10

steps = []
model = ReplayModel(Cassette.from_responses([answer("3"), answer("12")], task=TASK))
agent = ToolCallingAgent([], model, name="picker", description="Picks numbers.",
                         final_answer_checks=[at_least_ten],
                         step_callbacks=[lambda step: print("step", type(step).__name__,
                                                            flush=True)])
serve(agent, sys.argv[1])
"""


@pytest.fixture
def specialist(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    script = f"TASK = {TASK!r}\n" + textwrap.dedent(SPECIALIST)
    with serving(script, tmp_path, stdout=subprocess.PIPE) as served:
        yield served


def test_a_remote_specialist_checks_its_answers_and_calls_its_callbacks(
    specialist: tuple[str, subprocess.Popen[str]],
) -> None:
    address, process = specialist
    with AgentClient([address], agent="picker") as client:
        events = list(client.run_stream(TASK))
    failed = [e for e in events if isinstance(e, StepFailed)]
    assert len(failed) == 1 and "rejected by the check at_least_ten" in failed[0].error.message
    assert events[-1].error is None  # type: ignore[attr-defined]
    final = [e for e in events if type(e).__name__ == "FinalAnswer"]
    assert [e.answer for e in final] == ["12"]  # type: ignore[attr-defined]
    process.terminate()
    out, _ = process.communicate(timeout=30)
    assert out.splitlines()[:3] == ["step ActionStep", "step ActionStep", "step FinalAnswerStep"]
