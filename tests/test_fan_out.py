"""Fan-out and structured answers: ``run_parallel`` in a code agent's code (concurrent,
bounded, in order, one failure per item, cancelled with the run) and output schemas (an
off-schema answer goes back to the model once, then fails the run)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mesh import CodeAgent, ToolCallingAgent, tool
from mesh.agents.budget import Budget
from mesh.agents.context import RunContext, active_run
from mesh.agents.events import RunFinished, ToolCallFinished
from mesh.errors import ConfigError, ModelOutputError, RunCancelledError
from mesh.project import load_mesh_config
from tests.invariants import stream_problems
from tests.support import calls, code, scripted

LEAD = {"type": "object", "properties": {"industry": {"type": "string"},
                                          "founded": {"type": ["integer", "null"]}},
        "required": ["industry", "founded"], "additionalProperties": False}  # fmt: skip


def fan_out_code(n: int, tool_name: str = "meet", limit: str = "None") -> str:
    calls_text = ", ".join(f'{{"tool": "{tool_name}", "arguments": {{"i": {i}}}}}'
                           for i in range(n))  # fmt: skip
    return f"r = run_parallel(calls=[{calls_text}], max_concurrency={limit})\nfinal_answer(r)"


def test_run_parallel_runs_the_calls_at_once_and_answers_in_order() -> None:
    together = threading.Barrier(4, timeout=10)  # passes only if all four run at once

    @tool
    def meet(i: int) -> int:
        """Waits for the others, then answers.

        Args:
            i: Which call this is.
        """
        together.wait()
        if i == 2:
            raise ValueError("no luck for 2")
        return i * 10

    agent = CodeAgent([meet], scripted(code(fan_out_code(4))), max_parallel=4)
    result = agent.run("Fan out.")
    assert result == [{"ok": True, "result": 0}, {"ok": True, "result": 10},
                      {"ok": False, "error": "meet failed: ValueError: no luck for 2"},
                      {"ok": True, "result": 30}]  # fmt: skip


@pytest.mark.parametrize(("agent_limit", "call_limit", "expected"), [(2, "None", 2), (8, "3", 3)])
def test_run_parallel_keeps_within_the_limit(agent_limit: int, call_limit: str,
                                             expected: int) -> None:  # fmt: skip
    lock, running, peak = threading.Lock(), [0], [0]

    @tool
    def meet(i: int) -> int:
        """Counts how many run at once.

        Args:
            i: Which call this is.
        """
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return i

    agent = CodeAgent([meet], scripted(code(fan_out_code(9, limit=call_limit))),
                      max_parallel=agent_limit)  # fmt: skip
    assert [r["result"] for r in agent.run("Fan out.")] == list(range(9))
    assert peak[0] == expected


def test_a_specialist_fan_out_reports_every_call_once() -> None:
    specialist = ToolCallingAgent([], scripted(calls(("final_answer", {"answer": "ok"}))),
                                  name="helper", description="Helps.")  # fmt: skip
    code_text = ('r = run_parallel(calls=[{"tool": "helper", "arguments": {"task": "a"}}, '
                 '{"tool": "helper", "arguments": {"task": "b"}}, {"tool": "nobody"}])\n'
                 "final_answer(r)")  # fmt: skip
    agent = CodeAgent([], scripted(code(code_text)), managed_agents=[specialist])
    events = list(agent.run("Ask twice.", stream=True))
    assert stream_problems(events) == []
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    inner = [e for e in finished if e.depth == 0 and e.name in ("helper", "nobody")]
    assert len(inner) == 3 and [e.error is None for e in inner].count(True) == 2
    children = [e for e in events if isinstance(e, RunFinished) and e.depth == 1]
    assert len(children) == 2 and len({e.run_id for e in children}) == 2


def test_cancelling_the_run_cancels_every_call_in_flight() -> None:
    entered = threading.Barrier(3, timeout=10)

    @tool
    def wait_for_cancel(i: int) -> int:
        """Waits until the run is cancelled.

        Args:
            i: Which call this is.
        """
        run = active_run()
        assert run is not None
        entered.wait()
        deadline = time.monotonic() + 10
        while not run.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        return i

    ctx = RunContext(agent="agent")
    agent = CodeAgent([wait_for_cancel], scripted(code(fan_out_code(2, "wait_for_cancel"))))
    threading.Thread(target=lambda: (entered.wait(), ctx.cancel()), daemon=True).start()
    started, events = time.monotonic(), []
    with pytest.raises(RunCancelledError):
        events.extend(agent.run("Wait.", stream=True, context=ctx))
    assert time.monotonic() - started < 8  # not the tools' own 10 s
    ended = [e for e in events if isinstance(e, ToolCallFinished)]
    assert len({e.call_id for e in ended}) == len(ended)  # each call ends exactly once
    # (the code may reach final_answer before the cancellation is seen: the run still ends
    # cancelled)
    names = sorted(e.name for e in ended if e.name != "final_answer")
    assert names == ["run_parallel", "wait_for_cancel", "wait_for_cancel"]
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.error is not None
    assert finished.error.reason == "run_cancelled"


def test_an_answer_off_schema_goes_back_once_then_fits() -> None:
    model = scripted(
        calls(("final_answer", {"answer": {"industry": "Retail"}})),
        calls(("final_answer", {"answer": {"industry": "Retail", "founded": 1962}})),
    )
    agent = ToolCallingAgent([], model, output_schema=LEAD)
    result = agent.run("Enrich Walmart.", return_full_result=True)
    assert result.output == {"industry": "Retail", "founded": 1962}
    assert result.steps[0].error == ("the final answer does not match the output schema: "
                                     "answer: 'founded' is a required property")  # fmt: skip
    schema = agent.toolbox()["final_answer"].to_json_schema()["function"]["parameters"]
    assert schema["properties"]["answer"]["required"] == ["industry", "founded"]


def test_a_second_answer_off_schema_fails_the_run() -> None:
    model = scripted(
        code('final_answer({"industry": 3, "founded": None})'), code('final_answer("Retail, 1962")')
    )
    agent = CodeAgent([], model, output_schema=LEAD)
    with pytest.raises(ModelOutputError, match="answer: 'Retail, 1962' is not of type 'object'"):
        agent.run("Enrich Walmart.")


def test_output_schemas_and_fan_out_limits_come_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "lead.schema.json").write_text('{"type": "object", "required": ["industry"]}')
    (tmp_path / "bad.schema.json").write_text('{"type": "nope"}')
    base = ('[agents.a]\nkind = "tool-calling"\ndescription = "A."\naddress = "127.0.0.1:1"\n'
            "max_parallel = 3\n")  # fmt: skip
    (tmp_path / "mesh.toml").write_text(base + 'output_schema_file = "lead.schema.json"\n')
    agent = load_mesh_config(tmp_path / "mesh.toml").agent("a")
    assert agent.output_schema == {"type": "object", "required": ["industry"]}
    assert agent.max_parallel == 3
    for line, message in (
        ('output_schema_file = "bad.schema.json"', "'nope' is not valid"),
        ('output_schema_file = "none.json"', "cannot read JSON"),
        ("max_parallel = 0", "agents.a.max_parallel: must be at least 1"),
    ):
        (tmp_path / "mesh.toml").write_text(base.replace("max_parallel = 3\n", "") + line + "\n")
        with pytest.raises(ConfigError, match=message):
            load_mesh_config(tmp_path / "mesh.toml")


def test_a_fan_out_shares_the_budget_instead_of_multiplying_it() -> None:
    """Four delegations at once, each wanting three model calls, under a budget with eight
    left: each starts with a quarter of what is left when it starts (two calls at most) and
    stops there, so the batch spends at most what the run had, not four times it."""
    helper_model = scripted(*[calls(("memo_like", {"n": 1}))] * 2,
                            calls(("final_answer", {"answer": "done"})))  # fmt: skip

    @tool
    def memo_like(n: int) -> int:
        """Does nothing much.

        Args:
            n: Anything.
        """
        return n

    helper = ToolCallingAgent([memo_like], helper_model, name="helper", description="Helps.")
    spread = ", ".join('{"tool": "helper", "arguments": {"task": "Three calls."}}' for _ in "abcd")
    manager = CodeAgent([], scripted(code(f"r = run_parallel(calls=[{spread}])\nprint(r)"),
                                     code("final_answer(r)")),
                        managed_agents=[helper], budget=Budget(max_model_calls=9))  # fmt: skip
    events = list(manager.run("Fan out.", stream=True))
    children = [e for e in events if isinstance(e, RunFinished) and e.depth == 1]
    assert len(children) == 4
    assert all(e.error is not None and e.error.reason == "budget_exceeded" for e in children)
    assert all("helper is out of budget: max_model_calls=" in str(e.error) for e in children)
    assert sum(e.usage_by_agent["helper"].model_calls for e in children) <= 8
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.error is None
    assert sum(u.model_calls for u in finished.usage_by_agent.values()) <= 9
