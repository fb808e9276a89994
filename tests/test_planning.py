"""Planning (``planning_interval``), as in smolagents: a plan before the first step and an
update every N steps, each a model call of its own with its event, span and tokens; the
model reads it among its steps. In process, and on a specialist in its own process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh import CodeAgent, ToolCallingAgent, tool
from mesh.agents import ActionStep, FinalAnswerStep, ModelOutput, Planning
from mesh.agents.planning import PROCEED, PlanningStep
from mesh.errors import ConfigError
from mesh.rpc.client import AgentClient
from tests.otlp_receiver import Receiver
from tests.support import calls, code, scripted, serving, wait_until

TASK = "What is 6 times 7, doubled?"


@tool
def multiply(a: int, b: int) -> int:
    """Multiplies two integers.

    Args:
        a: The first.
        b: The second.
    """
    return a * b


def test_a_plan_comes_first_and_is_updated_every_n_steps() -> None:
    seen: list[str] = []
    agent = ToolCallingAgent(
        [multiply],
        scripted(
            "Facts: none given.\n1. Multiply 6 by 7.\n2. Double it.\n<end_plan>",
            calls(("multiply", {"a": 6, "b": 7})),
            calls(("multiply", {"a": 42, "b": 2})),
            "Facts: 6 x 7 = 42, doubled is 84.\n1. Answer 84.\n<end_plan>\nignored",
            calls(("final_answer", {"answer": "84"})),
        ),
        planning_interval=2,
        step_callbacks={PlanningStep: lambda plan: seen.append(f"plan {plan.step_number}"),
                        ActionStep: lambda step: seen.append(f"step {step.step_number}"),
                        FinalAnswerStep: lambda final: seen.append("final")},
    )  # fmt: skip
    events = list(agent.run(TASK, stream=True))
    assert seen == ["plan 1", "step 1", "step 2", "plan 3", "step 3", "final"]

    plans = [e for e in events if isinstance(e, Planning)]
    assert [(p.step, p.initial) for p in plans] == [(1, True), (3, False)]
    assert "1. Multiply 6 by 7." in plans[0].plan and "<end_plan>" not in plans[0].plan
    assert "ignored" not in plans[1].plan and TASK in plans[1].plan  # an update restates it
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Planning") < kinds.index("ModelOutput")  # before the first step

    memory = agent.memory
    assert memory is not None and [p.step_number for p in memory.plans] == [1, 3]
    # The plan's tokens count: 5 calls of 100 in, 10 out (the scripted model's usage).
    assert (memory.usage.input_tokens, memory.agent_usage.model_calls) == (500, 5)
    assert sum(p.usage.input_tokens for p in plans) == 200

    first_step = memory.steps[0].model_input  # the model read the plan, then the go-ahead
    assert [m.role for m in first_step[-3:]] == ["user", "assistant", "user"]
    assert first_step[-2].content == memory.plans[0].plan and first_step[-1].content == PROCEED
    update = memory.plans[1].model_input  # the run so far, then the ask
    assert update[-1].role == "user" and "update your plan" in (update[-1].content or "")
    assert "You have 18 steps left" in (update[-1].content or "")  # of the 20, at step 3
    assert any(m.content == memory.plans[0].plan for m in update)
    third_step = memory.steps[2].model_input
    assert third_step[-2].content == memory.plans[1].plan


def test_a_code_agent_plans_before_every_step_with_an_interval_of_one() -> None:
    agent = CodeAgent(
        [],
        scripted("1. Compute.\n<end_plan>", code("x = 6 * 7\nprint(x)"),
                 "1. Double and answer.\n<end_plan>", code("final_answer(x * 2)")),
        planning_interval=1,
    )  # fmt: skip
    assert agent.run(TASK) == 84
    assert agent.memory is not None and [p.initial for p in agent.memory.plans] == [True, False]


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="planning_interval must be at least 1"):
        ToolCallingAgent([], scripted("x"), planning_interval=0)


def test_planning_counts_against_the_budget() -> None:
    from mesh.agents.budget import Budget
    from mesh.errors import BudgetExceededError

    agent = ToolCallingAgent([], scripted("1. Answer.\n<end_plan>", calls(("final_answer",
                             {"answer": "x"}))), planning_interval=1,
                             budget=Budget(max_model_calls=1))  # fmt: skip
    with pytest.raises(BudgetExceededError):
        agent.run(TASK)
    assert agent.memory is not None and len(agent.memory.plans) == 1


SPECIALIST = """
import json, sys
from mesh import Cassette, ChatMessage, ModelResponse, ReplayModel, TokenUsage, ToolCall
from mesh import ToolCallingAgent, serve

def says(text):
    return ModelResponse(ChatMessage("assistant", text), TokenUsage(20, 2))

answer = ModelResponse(ChatMessage("assistant", None, (ToolCall("c", "final_answer",
                       json.dumps({"answer": "84"})),)), TokenUsage(10, 1))
model = ReplayModel(Cassette.from_responses([says("1. Answer 84.\\n<end_plan>"), answer]))
agent = ToolCallingAgent([], model, name="planner", description="Plans, then answers.",
                         planning_interval=3)
serve(agent, sys.argv[1])
"""


@pytest.fixture
def planner(tmp_path: Path, receiver: tuple[Receiver, int]) -> Iterator[str]:
    otlp = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver[1]}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    with serving(SPECIALIST, tmp_path, env=otlp) as (address, _):  # stopped: spans flushed
        yield address


def test_a_remote_specialists_plan_is_in_the_callers_stream_and_the_trace(
    planner: str, receiver: tuple[Receiver, int]
) -> None:
    with AgentClient([planner], agent="planner") as client:
        events = list(client.run_stream(TASK, run_id="planned-1"))
    plans = [e for e in events if isinstance(e, Planning)]
    assert len(plans) == 1 and plans[0].initial and "1. Answer 84." in plans[0].plan
    assert plans[0].usage.input_tokens == 20 and plans[0].run_id == "planned-1"
    finished = events[-1]
    assert finished.usage.input_tokens == 30  # type: ignore[attr-defined]  # plan + step
    assert not [e for e in events if isinstance(e, ModelOutput) and "end_plan" in (e.text or "")]

    collector, _ = receiver
    span = wait_until(lambda: _plan_span(collector), timeout_s=30)  # exported in batches
    run = wait_until(lambda: _spans(collector, "invoke_agent planner"), timeout_s=30)  # it ends
    assert span.trace_id == run[0].trace_id  # after its plan: it may come in a later batch
    chats = [s for s in collector.spans if s.parent_id == span.span_id]
    assert [s.name.split(" ")[0] for s in chats] == ["chat"]


def _spans(collector: Receiver, name: str) -> list[Any]:
    with collector.lock:
        return [s for s in collector.spans if s.name == name]


def _plan_span(collector: Receiver) -> Any:
    with collector.lock:
        return next((s for s in collector.spans if s.name == "agent.plan"), None)


def test_replay_prints_the_plans_where_they_were_made(capsys: pytest.CaptureFixture[str]) -> None:
    agent = ToolCallingAgent([], scripted("1. Answer 84.\n<end_plan>",
                             calls(("final_answer", {"answer": "84"}))),
                             planning_interval=5)  # fmt: skip
    agent.run(TASK)
    capsys.readouterr()
    agent.replay()
    out = capsys.readouterr().out
    assert out.index("1. Answer 84.") < out.index("final answer: 84")
    messages = agent.write_memory_to_messages()
    plan = agent.memory.plans[0].plan  # type: ignore[union-attr]
    at = [m.content for m in messages].index(plan)
    assert messages[at + 1].content == PROCEED and messages[at + 2].tool_calls  # then the step
