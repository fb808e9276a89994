"""stream_outputs: the model's text as it is generated, in process, through LiteLLM's real
streaming path (against the replay server), across the mesh, and in ``mesh run``'s print."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import (
    Cassette,
    ChatMessage,
    CodeAgent,
    LiteLLMModel,
    ModelResponse,
    RecordingModel,
    ReplayModel,
    TokenUsage,
    ToolCallingAgent,
)
from mesh.agents import ModelOutput, Planning
from mesh.agents.context import RunContext
from mesh.agents.events import AgentEvent, ModelOutputDelta, RunFinished
from mesh.cli.console import EventPrinter
from mesh.errors import RunCancelledError
from mesh.models.replay_server import ReplayServer
from mesh.models.wrappers import CachingModel
from mesh.rpc.client import AgentClient
from mesh.rpc.remote import RemoteAgent
from tests.support import calls, code, scripted, serving, wait_until

TASK = "What is 6 times 7?"
ANSWER = code("final_answer(6 * 7)", thought="Thought: multiply the two numbers.")


def deltas_by_call(events: list[AgentEvent]) -> dict[tuple[str, int, bool], str]:
    """The streamed text of each model call: (run id, step, planning) -> the pieces joined."""
    joined: dict[tuple[str, int, bool], str] = {}
    for e in events:
        if isinstance(e, ModelOutputDelta):
            key = (e.run_id, e.step, e.planning)
            joined[key] = joined.get(key, "") + e.text
    return joined


def test_a_code_agents_text_streams_before_each_model_output() -> None:
    agent = CodeAgent([], scripted(code("print(6)"), ANSWER), stream_outputs=True)
    events = list(agent.run(TASK, stream=True))
    outputs = [e for e in events if isinstance(e, ModelOutput)]
    streamed = deltas_by_call(events)
    assert len(outputs) == 2
    for output in outputs:  # joined, the pieces are the step's whole text, before it
        assert streamed[(output.run_id, output.step, False)] == output.text
        first_piece = next(i for i, e in enumerate(events) if isinstance(e, ModelOutputDelta)
                           and e.step == output.step)  # fmt: skip
        assert first_piece < events.index(output)
    assert sum(isinstance(e, ModelOutputDelta) for e in events) > 10  # pieces, not one lump
    assert events[-1].usage == TokenUsage(200, 20)  # type: ignore[attr-defined]


def test_without_stream_outputs_nothing_streams() -> None:
    agent = CodeAgent([], scripted(ANSWER))
    assert not [e for e in agent.run(TASK, stream=True) if isinstance(e, ModelOutputDelta)]


def test_plans_stream_too_marked_as_planning() -> None:
    agent = ToolCallingAgent([], scripted("1. Multiply.\n<end_plan>",
                             calls(("final_answer", {"answer": "42"}))),
                             planning_interval=5, stream_outputs=True)  # fmt: skip
    events = list(agent.run(TASK, stream=True))
    plan = next(e for e in events if isinstance(e, Planning))
    streamed = deltas_by_call(events)[(plan.run_id, plan.step, True)]
    assert streamed == "1. Multiply.\n<end_plan>"  # the model's text, as it wrote it
    assert "1. Multiply." in plan.plan
    # the tool call's step has no text: no pieces for it
    assert not any(isinstance(e, ModelOutputDelta) and not e.planning for e in events)


def test_recorded_pieces_are_replayed_as_recorded(tmp_path: Path) -> None:
    pieces = ["Thought: ", "multiply.\n```python\n", "final_answer(42)\n```"]
    entry = {"task": TASK, "turn": 0, "deltas": pieces,
             "response": {"content": "".join(pieces), "usage": {"input_tokens": 9,
                                                                 "output_tokens": 3}}}  # fmt: skip
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(entry) + "\n")
    agent = CodeAgent([], ReplayModel(path), stream_outputs=True)
    events = list(agent.run(TASK, stream=True))
    assert [e.text for e in events if isinstance(e, ModelOutputDelta)] == pieces

    recording = tmp_path / "again.jsonl"  # recorded again, streaming: the same pieces
    agent = CodeAgent([], RecordingModel(ReplayModel(path), recording), stream_outputs=True)
    assert agent.run(TASK) == 42
    line = json.loads(recording.read_text().splitlines()[1])
    assert line["deltas"] == pieces


def test_a_cached_answer_streams_as_one_piece() -> None:
    model = CachingModel(scripted(ANSWER, ANSWER))
    agent = CodeAgent([], model, stream_outputs=True)
    agent.run(TASK)
    events = list(agent.run(TASK, stream=True))
    assert model.hits == 1
    assert [e.text for e in events if isinstance(e, ModelOutputDelta)] == [ANSWER]


# ------------------------------------------------------- LiteLLM's streaming, over HTTP


def test_litellm_streams_pieces_and_keeps_the_usage_exact() -> None:
    cassette = Cassette.from_responses([ModelResponse(ChatMessage("assistant", ANSWER),
                                                      TokenUsage(812, 41))])  # fmt: skip
    with ReplayServer(cassette) as server:
        model = LiteLLMModel("openai/gpt-4o-mini", api_base=server.api_base)
        agent = CodeAgent([], model, stream_outputs=True)
        events = list(agent.run(TASK, stream=True))
    (request,) = server.requests
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    pieces = [e.text for e in events if isinstance(e, ModelOutputDelta)]
    assert len(pieces) > 5 and "".join(pieces) == ANSWER
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.error is None
    assert finished.usage == TokenUsage(812, 41)  # the provider's count, not an estimate


def test_a_run_cancelled_mid_stream_ends_once_as_cancelled_and_closes_the_request() -> None:
    long_answer = code("final_answer(1)", thought="Thinking " + "very " * 200 + "hard.")
    cassette = Cassette.from_responses([long_answer])
    ctx = RunContext(agent="agent")
    with ReplayServer(cassette, chunk_delay_s=0.05) as server:
        agent = CodeAgent([], LiteLLMModel("openai/gpt-4o-mini", api_base=server.api_base),
                          stream_outputs=True)  # fmt: skip
        events: list[AgentEvent] = []
        stream = agent.run(TASK, stream=True, context=ctx)
        with pytest.raises(RunCancelledError):
            for event in stream:
                events.append(event)
                if sum(isinstance(e, ModelOutputDelta) for e in events) == 3:
                    threading.Thread(target=ctx.cancel).start()
        wait_until(lambda: server.abandoned, timeout_s=10)  # the HTTP request was closed
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert len(finished) == 1 and finished[0].error is not None
    assert finished[0].error.reason == "run_cancelled"
    assert not [e for e in events if isinstance(e, ModelOutput)]  # no answer was made up
    assert 3 <= sum(isinstance(e, ModelOutputDelta) for e in events) < 150


# ----------------------------------------------------------------------- the mesh

SPECIALIST = """
import sys
from mesh import CodeAgent, LiteLLMModel, serve

model = LiteLLMModel("openai/gpt-4o-mini", api_base=sys.argv[2])
agent = CodeAgent([], model, name="multiplier", description="Multiplies.",
                  stream_outputs=True)
serve(agent, sys.argv[1])
"""


@pytest.fixture
def multiplier(tmp_path: Path) -> Iterator[tuple[str, ReplayServer]]:
    """A specialist in its own process streaming from LiteLLM (a replay server here)."""
    cassette = Cassette.from_responses(
        [ModelResponse(ChatMessage("assistant", ANSWER), TokenUsage(300, 30))]
    )
    runs = {"MESH_RUNS_DIR": str(tmp_path / "r")}
    with ReplayServer(cassette) as server, serving(SPECIALIST, tmp_path, server.api_base,
                                                   env=runs) as (address, _):  # fmt: skip
        yield address, server


def test_a_remote_specialist_streams_into_its_callers_stream_nested(
    multiplier: tuple[str, ReplayServer], tmp_path: Path
) -> None:
    address, _ = multiplier
    remote = RemoteAgent("multiplier", address, "Multiplies numbers.")
    manager = CodeAgent([], scripted(code('print(multiplier(task="6 times 7"))'),
                                     code("final_answer(42)")),
                        managed_agents=[remote], name="manager",
                        stream_outputs=True)  # fmt: skip
    events = list(manager.run(TASK, stream=True))
    streamed = deltas_by_call(events)
    nested = [e for e in events if isinstance(e, ModelOutputDelta) and e.depth == 1]
    assert nested and {e.agent for e in nested} == {"multiplier"}
    specialist_output = next(e for e in events if isinstance(e, ModelOutput) and e.depth == 1)
    assert streamed[(specialist_output.run_id, 1, False)] == ANSWER == specialist_output.text
    assert {e.agent for e in events if isinstance(e, ModelOutputDelta) and e.depth == 0} == {
        "manager"
    }
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.usage_by_agent["multiplier"].tokens == TokenUsage(300, 30)

    # Printed as mesh run prints it: the specialist's text indented under the manager's.
    out = io.StringIO()
    printer = EventPrinter(out)
    for event in events:
        printer(event)
    text = out.getvalue()
    assert "    [multiplier] step 1: model writing..." in text
    assert "      | Thought: multiply the two numbers." in text
    assert text.count("multiply the two numbers") == 1  # not again in the step's tally


def test_a_watcher_of_the_stream_gets_the_pieces_and_a_later_watcher_does_not(
    multiplier: tuple[str, ReplayServer],
) -> None:
    address, _ = multiplier
    with AgentClient([address], agent="multiplier") as client:
        live = list(client.run_stream(TASK, run_id="streamed-1"))
        later = list(client.watch_run("streamed-1"))
    pieces = [e for e in live if isinstance(e, ModelOutputDelta)]
    assert "".join(e.text for e in pieces) == ANSWER
    assert not [e for e in later if isinstance(e, ModelOutputDelta)]
    kept = [type(e).__name__ for e in later]
    assert kept == [type(e).__name__ for e in live if not isinstance(e, ModelOutputDelta)]
