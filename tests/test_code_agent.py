"""CodeAgent: the loop, state across steps, errors as observations, limits."""

from __future__ import annotations

import pytest

from mesh import CodeAgent, PrimeTool, TokenUsage, Tool, factorial, tool
from mesh.agents import CodeAction, FinalAnswer, Observation, RunFinished, RunStarted, StepFailed
from mesh.agents.events import ModelOutput, ToolCallFinished, ToolCallStarted
from mesh.errors import ConfigError, InvalidRequestError, MaxStepsError
from mesh.sandbox.snippet import FinalAnswerSignal
from tests.support import code, scripted


def agent(*responses: str, tools: list[Tool] | None = None, **kwargs: object) -> CodeAgent:
    return CodeAgent(
        tools if tools is not None else [factorial, PrimeTool()],
        scripted(*responses),
        executor="unsafe-local",
        **kwargs,
    )  # type: ignore[arg-type]


def test_state_persists_across_steps_and_final_answer_ends_the_run() -> None:
    a = agent(
        code("import math\nx = factorial(5)\nprint('x is', x)"),
        code("def double(v):\n    return 2 * v\ny = double(x) + math.floor(0.5)\ny"),
        code("final_answer(smallest_prime_factor(y))"),
    )
    result = a.run("Compute.", return_full_result=True)
    assert result.output == "240 is composite; its smallest prime factor is 2."
    assert result.state == "success"
    steps = a.memory.steps  # type: ignore[union-attr]
    assert steps[0].observation == "Execution logs:\nx is 120"
    assert steps[1].observation == "Last output from code snippet:\n240"
    assert steps[2].is_final and steps[2].code == "final_answer(smallest_prime_factor(y))"
    assert [r.name for r in steps[2].tool_calls] == ["smallest_prime_factor", "final_answer"]
    assert result.usage == TokenUsage(300, 30)
    assert all(s.duration_s >= 0 and s.model_input for s in steps)
    # The model saw the observation of step 1 before step 2.
    assert steps[1].model_input[-1].content == "Observation:\nExecution logs:\nx is 120"


def test_errors_become_observations_and_the_run_goes_on() -> None:
    a = agent(
        "I think the answer is 4.",  # no code block
        code("x = 1 +"),  # syntax error
        code("def f():\n    return 1 / 0\nf()"),  # runtime error
        code("factorial(n=-3)"),  # tool error
        code("factorial('five')"),  # schema violation
        code("import os"),  # unauthorised import
        code("unknown_tool(1)"),  # name error
        code("final_answer('recovered')"),
    )
    assert a.run("Try things.") == "recovered"
    errors = [s.error for s in a.memory.steps[:-1]]  # type: ignore[union-attr]
    assert "no code block found" in errors[0]
    assert "SyntaxError" in errors[1] and "line 1" in errors[1]
    assert "ZeroDivisionError: division by zero" in errors[2]
    assert "line 3, in <module>" in errors[2] and "line 2, in f" in errors[2]
    assert "factorial failed: ValueError: factorial is not defined for negative" in errors[3]
    assert "argument 'n': expected integer, got string" in errors[4]
    assert "import of 'os' is not allowed" in errors[5]
    assert "additional_authorized_imports" in errors[5]
    assert "NameError: name 'unknown_tool' is not defined" in errors[6]
    # Each error was shown to the model with a retry hint.
    last_input = a.memory.steps[-1].model_input  # type: ignore[union-attr]
    assert sum("Now let's retry" in (m.content or "") for m in last_input) == 7


def test_code_can_catch_tool_errors() -> None:
    a = agent(
        code(
            "try:\n    factorial(-1)\n"
            "except Exception as err:\n    final_answer(type(err).__name__)"
        )
    )
    assert a.run("t") == "ToolExecutionError"


def test_final_answer_cannot_be_swallowed_by_except_exception() -> None:
    a = agent(code("try:\n    final_answer(7)\nexcept Exception:\n    print('swallowed')"))
    assert a.run("t") == 7
    assert issubclass(FinalAnswerSignal, BaseException)
    assert not issubclass(FinalAnswerSignal, Exception)


def test_additional_authorized_imports() -> None:
    a = agent(
        code("import os.path\nfinal_answer(os.path.basename('/a/b'))"),
        additional_authorized_imports=["os"],
    )
    assert a.run("t") == "b"
    assert "os" in a.system_prompt()


def test_print_output_is_captured_and_capped() -> None:
    a = agent(code("print('x' * 30000)"), code("final_answer('ok')"))
    a.run("t")
    observation = a.memory.steps[0].observation  # type: ignore[union-attr]
    assert (
        observation is not None and "[output cut: 10001 more characters not shown]" in observation
    )


def test_max_steps_asks_for_a_best_answer() -> None:
    a = agent(code("print(1)"), code("print(2)"), "My best answer is 42.", max_steps=2)
    result = a.run("t", return_full_result=True)
    assert (result.output, result.state) == ("My best answer is 42.", "max_steps")
    assert "maximum number of steps" in (result.steps[-1].model_input[-1].content or "")


def test_max_steps_without_any_answer_is_a_clear_error() -> None:
    a = agent(code("print(1)"), "", max_steps=1)
    with pytest.raises(MaxStepsError, match="max_steps=1 without a final answer"):
        a.run("t")


def test_runtime_tool_registration_takes_effect_next_step() -> None:
    @tool
    def enable_factorial() -> str:
        """Make the factorial tool available from the next step on."""
        a.tools["factorial"] = factorial
        return "enabled"

    a = agent(
        code("enable_factorial()\nfactorial(3)"),  # registered, but not in this step
        code("final_answer(factorial(4))"),  # there now
        tools=[enable_factorial],
    )
    assert a.run("t") == 24
    first = a.memory.steps[0]  # type: ignore[union-attr]
    assert "NameError: name 'factorial' is not defined" in (first.error or "")
    assert "factorial(n: integer) -> integer" not in first.model_input[0].content  # type: ignore[operator]
    assert "factorial(n: integer) -> integer" in a.memory.system_prompt  # type: ignore[union-attr]


def test_tools_dict_changes_between_runs() -> None:
    a = agent(code("final_answer(factorial(3))"), tools=[])
    a.tools["factorial"] = factorial
    assert a.run("t") == 6
    del a.tools["factorial"]
    a.model = scripted(code("final_answer(factorial(3))"), "gave up")
    a.max_steps = 1
    assert a.run("t") == "gave up"
    assert "NameError" in (a.memory.steps[0].error or "")  # type: ignore[union-attr]


def test_stream_yields_events_in_order() -> None:
    a = agent(code("print(factorial(3))"), code("final_answer(6)"), name="calc")
    events = list(a.run("Three factorial?", stream=True))
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "RunStarted",
        "ModelOutput",
        "CodeAction",
        "ToolCallStarted",
        "ToolCallFinished",
        "Observation",
        "ModelOutput",
        "CodeAction",
        "ToolCallStarted",
        "ToolCallFinished",
        "FinalAnswer",
        "RunFinished",
    ]
    assert isinstance(events[0], RunStarted) and events[0].task == "Three factorial?"
    assert all(e.agent == "calc" and e.run_id == events[0].run_id for e in events)
    assert isinstance(events[2], CodeAction) and events[2].code == "print(factorial(3))"
    assert isinstance(events[3], ToolCallStarted) and events[3].arguments == {"n": 3}
    assert isinstance(events[4], ToolCallFinished) and events[4].result == "6"
    assert isinstance(events[5], Observation) and events[5].text == "Execution logs:\n6"
    assert isinstance(events[1], ModelOutput) and events[1].usage == TokenUsage(100, 10)
    assert isinstance(events[-2], FinalAnswer) and events[-2].answer == 6
    assert isinstance(events[-1], RunFinished) and events[-1].steps == 2
    assert events[-1].error is None


def test_stream_reports_step_failures_and_run_errors() -> None:
    a = agent("no code", max_steps=1)
    events = []
    with pytest.raises(MaxStepsError):
        for event in a.run("t", stream=True):
            events.append(event)
    assert any(isinstance(e, StepFailed) and e.error.reason == "model_output_error"
               and "no code block" in e.error.message for e in events)  # fmt: skip
    assert isinstance(events[-1], RunFinished) and events[-1].error is not None
    assert events[-1].error.reason == "max_steps_exceeded"


def test_closing_the_stream_cancels_the_run() -> None:
    a = agent(*[code(f"print({i})") for i in range(50)], max_steps=50)
    stream = a.run("t", stream=True)
    for event in stream:
        if isinstance(event, Observation):
            break
    stream.close()  # type: ignore[attr-defined]
    assert len(a.memory.steps) < 50  # type: ignore[union-attr]


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="needs a model"):
        CodeAgent([], executor="unsafe-local")
    with pytest.raises(ConfigError, match="unknown executor 'docker'"):
        CodeAgent([], scripted("x"), executor="docker")
    with pytest.raises(ConfigError, match="not a Tool; decorate it with @tool"):
        CodeAgent([len], scripted("x"), executor="unsafe-local")  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="two tools are named 'factorial'"):
        CodeAgent([factorial, factorial], scripted("x"), executor="unsafe-local")
    with pytest.raises(ConfigError, match="max_steps must be at least 1"):
        agent("x", max_steps=0)
    with pytest.raises(InvalidRequestError, match="task must be a non-empty string"):
        agent("x").run("  ")


def test_unsafe_executor_warns_every_time() -> None:
    for _ in range(2):
        with pytest.warns(RuntimeWarning, match="no sandbox"):
            agent(code("final_answer(1)")).run("t")
