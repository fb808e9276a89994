"""Memory you can replay and export: ``agent.replay()``, ``to_messages``, JSON and back, and
``mesh replay RUN_ID`` from the audit log."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mesh import CodeAgent, ToolCallingAgent, factorial, tool
from mesh.agents import ActionStep, AgentEvent, AgentMemory, RunStarted, ToolCallRecord
from mesh.agents import memory as memory_module
from mesh.agents.memory_codec import MARKER, ReprValue, json_safe, restored
from mesh.agents.planning import PlanningStep
from mesh.agents.render import StepRenderer
from mesh.agents.replay import replay
from mesh.cli.console import EventPrinter
from mesh.errors import InvalidRequestError, MaxStepsError, NotFoundError, ToolExecutionError
from mesh.host.audit import AuditLog, read_run
from mesh.host.audit_replay import replayed_events
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentClient
from tests.mesh_setup import SEED_TASK
from tests.support import calls, code, scripted


@tool
def lookup(key: str) -> str:
    """Look a key up; some keys are gone.

    Args:
        key: What to look up.
    """
    if key == "gone":
        raise ToolExecutionError("lookup failed: the key is gone") from NotFoundError("gone")
    return f"value of {key}"


def calc(*responses: str, **kwargs: Any) -> CodeAgent:
    """A code agent of scripted answers: the nth answers a request that holds n assistant
    messages (a continued conversation's first request holds its earlier turns')."""
    return CodeAgent([factorial], scripted(*responses), executor="unsafe-local", name="calc",
                     **kwargs)  # fmt: skip


CALC_STEPS = (
    code("x = factorial(5)\nprint('x is', x)", "First 5!."),
    code("factorial(-1)", "A bad call."),
    code("final_answer(2 * x)", "Done."),
)


def replayed(memory: AgentMemory | None, agent: str, **kwargs: Any) -> list[str]:
    out = io.StringIO()
    replay(memory, agent, file=out, **kwargs)
    return out.getvalue().splitlines()


def untimed(lines: list[str]) -> list[str]:
    """Without durations: a memory does not keep how long a model call took."""
    return [re.sub(r"(, )?\d+\.\d+ m?s", "", line) for line in lines]


# ---------------------------------------------------------------- agent.replay()


def test_a_replay_reads_as_the_run_did_live() -> None:
    agent = calc(*CALC_STEPS)
    live = StepRenderer()
    lines = [line for e in agent.run("Double 5!.", stream=True) for line in live.indented(e)]
    shown = replayed(agent.memory, "calc")
    assert untimed(shown) == untimed(lines)
    assert shown[0] == "[calc] task: Double 5!."
    assert shown[1] == "[calc] step 1: model (100 in / 10 out tokens)"  # no time: none kept
    assert "  -> factorial(n=5)" in shown and "  observation: x is 120" in shown
    assert any(line.startswith("  <- factorial: 120 (") for line in shown)
    assert any("<- factorial: error: tool_execution_error: factorial failed: ValueError" in line
               for line in shown)  # fmt: skip
    assert "  ! code_error: Code failed:" in shown
    assert shown[-2] == "[calc] final answer: 240"
    assert re.fullmatch(r"\[calc\] done in \d+\.\d\d s, 3 step\(s\), 300 input \+ 30 output "
                        r"tokens", shown[-1])  # fmt: skip


def planner() -> ToolCallingAgent:
    """Plans before step 1 and updates its plan before step 3 (as in test_planning)."""
    return ToolCallingAgent([factorial], scripted(
        "Facts: none.\n1. Compute 3!.\n<end_plan>",
        calls(("factorial", {"n": 3})),
        calls(("factorial", {"n": 4})),
        "Facts: 3! is 6, 4! is 24.\n1. Answer.\n<end_plan>",
        calls(("final_answer", {"answer": "6 and 24"})),
    ), planning_interval=2, name="planner")  # fmt: skip


def test_a_replay_shows_the_plans_where_they_were_made_as_live() -> None:
    agent = planner()
    live = StepRenderer()
    lines = [line for e in agent.run("3! and 4!?", stream=True) for line in live.indented(e)]
    shown = untimed(replayed(agent.memory, "planner"))  # a plan's time is kept, not a step's
    assert shown == untimed(lines)
    plan = shown.index("[planner] plan before step 1 (100 in / 10 out tokens)")
    assert shown[plan - 1] == "[planner] task: 3! and 4!?"
    assert shown[plan + 1].startswith("  | Here are the facts I know and the plan of action")
    assert "  | 1. Compute 3!." in shown[plan:]
    update = shown.index("[planner] updated plan before step 3 (100 in / 10 out tokens)")
    assert shown[update - 2] == "  -> factorial(n=4)"  # after step 2, before step 3
    assert shown[update - 1].startswith("  <- factorial: 24")
    assert shown[update + 1 :].index("[planner] step 3: model (100 in / 10 out tokens)") > 0
    assert shown[-1].endswith("3 step(s), 500 input + 50 output tokens")  # plans count too


def test_a_detailed_replay_shows_what_each_model_call_read_once() -> None:
    agent = ToolCallingAgent(
        [factorial],
        scripted(
            calls(("factorial", {"n": 3}), ("fctorial", {"n": 3})),
            calls(("final_answer", {"answer": "3! is 6"})),
        ),
        name="caller",
    )
    agent.run("What is 3!?")
    brief = replayed(agent.memory, "caller")
    assert not any("model input" in line for line in brief)
    assert "  -> fctorial(n=3)" in brief
    assert any(line.startswith("  <- fctorial: error: tool_not_found: there is no tool named "
                               "'fctorial'") for line in brief)  # fmt: skip
    assert "[caller] final answer: 3! is 6" in brief
    shown = replayed(agent.memory, "caller", detailed=True)
    first = shown.index("  model input:")
    assert shown[first + 1 : first + 3] == [
        "    system:",
        "      You are caller, an expert assistant who solves tasks by calling tools.",
    ]
    assert "    user:" in shown and "      What is 3!?" in shown
    second = shown.index("  model input (after the 2 message(s) of the previous call):")
    new = shown[second : shown.index("[caller] final answer: 3! is 6")]
    assert new[1:4] == ["    assistant:", "      -> factorial({\"n\": 3})",
                        "      -> fctorial({\"n\": 3})"]  # fmt: skip
    assert "    tool (id_0_factorial):" in new and "      6" in new
    assert not any("system:" in line for line in new)  # read once, shown once


def test_a_replay_shows_the_conversation_a_run_continued() -> None:
    agent = calc(code("final_answer(120)"), "(unused)", code("final_answer(240)"))
    agent.run("What is 5!?")
    agent.run("Double it.", reset=False)
    shown = replayed(agent.memory, "calc")
    assert shown[:4] == [
        "[calc] continues a conversation of 1 earlier turn(s):",
        "  earlier task: What is 5!?",
        "  its answer: 120",
        "[calc] task: Double it.",
    ]


def test_a_run_that_ended_without_an_answer_replays_as_failed() -> None:
    agent = calc(code("print(1)"), "", max_steps=1)  # and no answer when asked for one
    with pytest.raises(MaxStepsError):
        agent.run("Never finish.")
    shown = replayed(agent.memory, "calc")
    assert shown[-1].startswith("[calc] failed: agent_error: the run has no final answer")
    assert "2 step(s)" in shown[-1]


def test_nothing_to_replay_before_a_run() -> None:
    with pytest.raises(InvalidRequestError, match="calc has no run to replay: run it first"):
        replay(calc().memory, "calc")


# ------------------------------------------------------------ to_messages


def test_to_messages_is_the_conversation_the_model_read() -> None:
    agent = calc(code("final_answer(120)"), "(unused)", *CALC_STEPS)
    agent.run("What is 5!?")
    agent.run("Double it.", reset=False)
    memory = agent.memory
    assert memory is not None
    messages = memory.to_messages()
    assert messages[0].role == "system" and messages[0].content == memory.system_prompt
    assert [m.content for m in messages[1:4]] == [
        "What is 5!?", code("final_answer(120)"), "Final answer: 120"]  # fmt: skip
    assert messages[4].content == "Double it."
    assert "Observation:\nExecution logs:\nx is 120" in [m.content for m in messages]
    errors = [m.content or "" for m in messages if "Now let's retry" in (m.content or "")]
    assert len(errors) == 1 and "ValueError" in errors[0]
    assert messages[-1].role == "assistant" and messages[-1].content == CALC_STEPS[-1]
    assert messages[:-1] == memory.steps[-1].model_input  # exactly what the last call read
    assert AgentMemory(system_prompt="", task="t").to_messages() == []


def test_to_messages_with_the_agents_step_messages_ends_with_the_last_observation() -> None:
    agent = ToolCallingAgent([factorial], scripted(
        calls(("factorial", {"n": 4})), calls(("final_answer", {"answer": "24"}))))  # fmt: skip
    agent.run("What is 4!?")
    assert agent.memory is not None
    bare = agent.memory.to_messages()
    assert bare[-1].tool_calls[0].name == "final_answer"  # asked, but not answered
    messages = agent.memory.to_messages(agent._step_messages)
    assert messages[: len(bare)] == bare
    assert [(m.role, m.content) for m in messages[len(bare) :]] == [("tool", "24")]
    asked = {c.id for m in messages for c in m.tool_calls}
    assert asked == {m.tool_call_id for m in messages if m.role == "tool"}  # every call answered


# -------------------------------------------------------------- JSON and back


def test_a_real_run_goes_to_json_and_back_unchanged() -> None:
    agent = ToolCallingAgent([lookup], scripted(
        calls(("final_answer", {"answer": {"first": True}})),
        "(unused: the model has read two assistant messages when the next run starts)",
        calls(("lookup", {"key": "a"}), ("lookup", {"key": "gone"}), ("nowhere", {})),
        "No call at all.",
        calls(("final_answer", {"answer": {"a": "value of a", "n": [1, 2.5, None]}})),
    ), name="looker")  # fmt: skip
    agent.run("First.")
    agent.run("Look a and gone up.", reset=False)
    memory = agent.memory
    assert memory is not None
    text = memory.to_json()
    again = AgentMemory.from_json(text)
    assert again == memory
    assert again.to_json() == text
    assert AgentMemory.from_json(text.encode()) == memory
    data = json.loads(text)
    assert data["task"] == "Look a and gone up." and data["history"][0]["task"] == "First."
    assert data["final_answer"] == {"a": "value of a", "n": [1, 2.5, None]}
    assert data["usage"] == {"input_tokens": 300, "output_tokens": 30,
                             "cost_usd": memory.agent_usage.cost_usd, "model_calls": 3}  # fmt: skip
    ok, gone, nowhere = data["steps"][0]["tool_calls"]
    assert ok["result"] == "value of a" and ok["error_info"] is None and ok["duration_s"] > 0
    assert gone["error_info"] == {"reason": "tool_execution_error", "retryable": False,
                                  "message": "lookup failed: the key is gone",
                                  "metadata": {"cause": "not_found"}}  # fmt: skip
    assert nowhere["error_info"]["reason"] == "tool_not_found"
    assert data["steps"][1]["error_info"]["reason"] == "model_output_error"
    assert data["steps"][1]["model_output"]["content"] == "No call at all."
    # The errors read back are errors of the same kind, as the records' data says.
    assert isinstance(again.steps[0].tool_calls[1].exception, ToolExecutionError)
    assert again.steps[0].tool_calls[1].error_info == memory.steps[0].tool_calls[1].error_info


def test_a_run_with_plans_goes_to_json_and_back_unchanged() -> None:
    agent = planner()
    agent.run("3! and 4!?")
    memory = agent.memory
    assert memory is not None and len(memory.plans) == 2
    text = memory.to_json()
    assert AgentMemory.from_json(text) == memory and AgentMemory.from_json(text).to_json() == text
    plans = json.loads(text)["plans"]
    assert [(p["step_number"], p["initial"]) for p in plans] == [(1, True), (3, False)]
    assert plans[1]["model_input"][-1]["role"] == "user" and plans[1]["usage"]["input_tokens"]


def test_the_json_form_holds_every_field() -> None:
    """A field added to the memory, a step, a plan or a tool call must be added to its JSON
    form too (and so to ``from_dict``): else an export loses it unseen."""
    agent = planner()
    agent.run("3! and 4!?")
    memory = agent.memory
    assert memory is not None
    data = memory.to_dict()
    for kind, written in [(AgentMemory, data), (ActionStep, data["steps"][0]),
                          (PlanningStep, data["plans"][0]),
                          (ToolCallRecord, data["steps"][0]["tool_calls"][0])]:  # fmt: skip
        kept = {f.name for f in dataclasses.fields(kind)} - {"exception"}  # kept as error_info
        assert kept <= set(written), f"{kind.__name__} loses {kept - set(written)}"


def test_values_that_are_not_json_are_kept_as_their_repr_and_read_back_the_same() -> None:
    agent = calc(code("final_answer((2 * factorial(5), {'ok'}))"))
    agent.run("Answer with a tuple.")
    assert agent.memory is not None
    data = agent.memory.to_dict()
    marker = {MARKER: "(240, {'ok'})"}
    assert data["final_answer"] == marker and data["steps"][0]["final_answer"] == marker
    assert data["steps"][0]["tool_calls"][1]["arguments"] == {"answer": marker}
    again = AgentMemory.from_json(agent.memory.to_json())
    assert again.steps[0].final_answer == ReprValue("(240, {'ok'})")
    assert again.to_json() == agent.memory.to_json()
    assert "[calc] final answer: (240, {'ok'})" in replayed(again, "calc")


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def _loop() -> list[Any]:
    items: list[Any] = []
    items.append(items)
    return items


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("value", [None, True, 0, -7, 2.5, "é", [], {}, [1, {"a": [None]}],
                                   {MARKER: "x", "other": 1}, _deep(31)])  # fmt: skip
def test_json_values_are_written_as_they_are(value: Any) -> None:
    assert json_safe(value) == value
    assert restored(json.loads(json.dumps(json_safe(value)))) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [((1, 2), "(1, 2)"), ({3}, "{3}"), (math.nan, "nan"), (-math.inf, "-inf"),
     ({1: "a"}, "{1: 'a'}"), ({MARKER: "looks like one"}, "{'$repr': 'looks like one'}"),
     (BrokenRepr(), "<BrokenRepr object: its repr failed with "
                                          "RuntimeError>")],
)  # fmt: skip
def test_other_values_become_their_repr_with_a_marker(value: Any, text: str) -> None:
    assert json_safe(value) == {MARKER: text}
    assert restored(json.loads(json.dumps(json_safe(value)))) == ReprValue(text)


def test_values_too_deep_too_long_or_inside_themselves_become_markers() -> None:
    assert json_safe(_loop()) == [{MARKER: "[[...]]"}]
    deep = json_safe(_deep(40))
    while isinstance(deep, list):
        deep = deep[0]
    assert set(deep) == {MARKER}
    assert json_safe(10**5000) == {MARKER: "<int object: its repr failed with ValueError>"}


def broken(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_from_json_refuses_what_to_json_did_not_write(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = calc(code("final_answer(1)"))
    agent.run("One.")
    assert agent.memory is not None
    text = agent.memory.to_json()
    cases = {
        "a memory's JSON does not parse": text[:-1],
        "nested too deeply": "[" * 100 + "]" * 100,
        "a memory must be a JSON object": "[]",
        "not a memory of this version": broken(text, '"version": 1', '"version": 2'),
        "step 1 has no 'usage'": broken(text, '"usage": {"input_tokens": 100', '"use": {"x": 1'),
        "step 1's 'is_final' must be true or false": broken(text, '"is_final": true',
                                                            '"is_final": 1'),
        "role must be one of assistant, system, tool, user": broken(text, '"role": "user"',
                                                                   '"role": "root"'),
        "'$repr' marker holds a string": broken(text, '"final_answer": 1',
                                                '"final_answer": {"$repr": 1}'),
        "step 1's 'step_number' must be a count": broken(text, '"step_number": 1',
                                                         '"step_number": -1'),
    }  # fmt: skip
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            AgentMemory.from_json(bad)
    limit = memory_module.MAX_MEMORY_JSON_BYTES
    assert limit == 64 * 2**20
    with pytest.raises(ValueError, match="a memory's JSON is at most 64 MiB; this is more"):
        AgentMemory.from_json(b" " * (limit + 1))
    monkeypatch.setattr(memory_module, "MAX_MEMORY_JSON_BYTES", 1000)
    with pytest.raises(ValueError, match="at most 0 MiB"):  # 600 characters, 1,200 bytes
        AgentMemory.from_json('"' + "é" * 598 + '"')


# ---------------------------------------------------------------- mesh replay


def test_an_audited_run_replays_as_it_was_live(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "planner.jsonl")
    live = StepRenderer()
    lines = []
    for event in planner().run("3! and 4!?", stream=True):
        log.record(event)
        lines += live.indented(event)
    log.close()
    run_id = json.loads((tmp_path / "planner.jsonl").read_text().splitlines()[0])["run_id"]
    entries = read_run(tmp_path, run_id)
    again = StepRenderer()
    shown = [line for e in replayed_events(entries, run_id) for line in again.indented(e)]
    assert shown == lines  # times too: the audit log keeps them
    assert "[planner] updated plan before step 3" in "\n".join(shown)


def test_audit_entries_missing_fields_still_replay() -> None:
    entries: list[dict[str, Any]] = [
        {"event": "RunStarted", "run_id": "r", "agent": "a"},
        {"event": "ModelOutput", "run_id": "r", "prompt": [{"role": 3}], "tool_calls": [7]},
        {"event": "ToolCallStarted", "run_id": "r", "arguments": "not an object"},
        {"event": "ToolCallFinished", "run_id": "r", "error": {"reason": "x"}},
        {"event": "StepFailed", "run_id": "r"},
        {"event": "SomethingNew", "run_id": "r"},
        {"event": "RunStarted", "run_id": "c", "parent_run_id": "r"},
        {"event": "RunStarted", "run_id": "loop", "parent_run_id": "loop"},
        {"event": "RunFinished", "run_id": "r", "usage_by_agent": {"a": {"tokens": 1}}},
    ]
    events = list(replayed_events(entries, "r"))
    assert [type(e).__name__ for e in events] == [
        "RunStarted", "ModelOutput", "ToolCallStarted", "ToolCallFinished", "StepFailed",
        "RunStarted", "RunStarted", "RunFinished"]  # fmt: skip
    assert [e.depth for e in events if isinstance(e, RunStarted)] == [0, 1, 0]
    assert StepRenderer(detailed=True).lines(events[1])[:3] == [
        "[] step 0: model (0 in / 0 out tokens)",
        "  model input:",
        "    user: (not recorded)",
    ]


def test_mesh_replay_prints_a_mesh_run_nested_as_it_was_live(
    mesh_dir: Path, tmp_path: Path
) -> None:
    config = load_mesh_config(mesh_dir / "mesh.toml")
    audit = tmp_path / "audit"
    only = ("manager", "research_specialist", "math_specialist")
    live = io.StringIO()
    with (
        MeshProcesses(config, env={"MESH_AUDIT_DIR": str(audit)}, only=only,
                      log_dir=tmp_path / "logs") as mesh,
        AgentClient(mesh.addresses["manager"][0], agent="manager") as client,
        client.run_stream(SEED_TASK, run_id="replayed-1", timeout_s=60) as stream,
    ):  # fmt: skip
        printer = EventPrinter(live)
        events: list[AgentEvent] = list(stream)
        for event in events:
            printer(event)
    done = run_mesh("replay", "replayed-1", "--dir", str(audit))
    assert done.returncode == 0, done.stderr
    shown = done.stdout.splitlines()
    assert untimed(shown) == untimed(live.getvalue().splitlines())
    assert shown[0] == f"[manager] task: {SEED_TASK}"
    assert shown[1].startswith("[manager] step 1: model (1480 in / 74 out tokens")
    assert (
        "    [research_specialist] task: Find the year gRPC was open-sourced and remember "
        "it in the memo under the key 'grpc_year'. Answer with the year only." in shown
    )
    assert '      -> memo(action="set", key="grpc_year", value=2015)' in shown
    assert "    [research_specialist] final answer: 2015" in shown
    assert "      -> smallest_prime_factor(n=2015)" in shown
    assert "    [math_specialist] final answer: 5" in shown
    last_step = next(n for n, line in enumerate(shown) if line.startswith("[manager] step 3:"))
    assert shown.index("    [math_specialist] final answer: 5") < last_step
    assert (
        "[manager] final answer: gRPC was open-sourced in 2015; the smallest prime factor "
        "of 2015 is 5." in shown
    )
    assert shown[-1] == ("[manager] with its delegates: 8 model calls, 10439 input + 310 output "
                         "tokens, $0.0018")  # fmt: skip

    detailed = run_mesh("replay", "replayed-1", "--dir", str(audit), "--detailed").stdout
    assert "  model input:\n    system:\n      You are manager," in detailed
    assert "      model input:\n        system:\n          You are math_specialist," in detailed

    missing = run_mesh("replay", "no-such-run", "--dir", str(audit))
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == (f"error (not_found): no audit entries for run 'no-such-run' "
                              f"under {audit}\n")  # fmt: skip


def run_mesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mesh", *args], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
