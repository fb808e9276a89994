"""The seed scenario in one process: a manager delegating to two specialists."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mesh import CodeAgent, DuckDuckGoTool, MemoTool, PrimeTool, ToolCallingAgent, tool
from mesh.agents import FinalAnswer, ModelOutput, RunStarted
from mesh.agents.context import active_run
from mesh.errors import ConfigError
from mesh.tools.web_search import SearchResult
from tests.support import calls, code, scripted

TASK = (
    "In which year was gRPC open-sourced? Remember the year, then tell me the smallest "
    "prime factor of that year."
)
searches: list[str] = []


def fake_search(query: str, max_results: int) -> list[SearchResult]:
    searches.append(query)
    return [
        SearchResult(
            title="gRPC - Wikipedia",
            href="https://en.wikipedia.org/wiki/GRPC",
            body="gRPC was initially created by Google and open-sourced in 2015.",
        )
    ]


def research_specialist(memo_path: Path, *responses: object) -> ToolCallingAgent:
    return ToolCallingAgent(
        [DuckDuckGoTool(backend=fake_search), MemoTool(memo_path)],
        scripted(
            *responses
            or (  # type: ignore[arg-type]
                calls(("web_search", {"query": "year gRPC open-sourced"})),
                calls(("memo", {"action": "set", "key": "grpc_year", "value": 2015})),
                calls(("final_answer", {"answer": "2015"})),
            )
        ),
        name="research_specialist",
        description="Finds facts on the web and remembers them.",
    )


def math_specialist() -> CodeAgent:
    return CodeAgent(
        [PrimeTool()],
        scripted(
            code("report = smallest_prime_factor(2015)\nprint(report)"),
            code("final_answer(int(report.rstrip('.').split()[-1]))"),
        ),
        executor="unsafe-local",
        name="math_specialist",
        description="Does exact arithmetic and number theory.",
    )


def manager(*specialists: object, responses: tuple[str, ...] | None = None) -> CodeAgent:
    return CodeAgent(
        [],
        scripted(
            *responses
            or (
                code(
                    'year = research_specialist(task="Find the year gRPC was open-sourced and '
                    'remember it in the memo as grpc_year.")\nprint(year)'
                ),
                code(
                    'spf = math_specialist(task=f"What is the smallest prime factor of {year}?")\n'
                    "print(spf)"
                ),
                code(
                    'final_answer(f"gRPC was open-sourced in {year}; the smallest prime factor '
                    'of {year} is {spf}.")'
                ),
            )
        ),
        managed_agents=specialists,  # type: ignore[arg-type]
        executor="unsafe-local",
        name="manager",
    )


def test_manager_answers_using_both_specialists(tmp_path: Path) -> None:
    research, math = research_specialist(tmp_path / "memo.db"), math_specialist()
    boss = manager(research, math)
    events = list(boss.run(TASK, stream=True))

    final = events[-2]
    assert isinstance(final, FinalAnswer) and final.depth == 0
    assert final.answer == "gRPC was open-sourced in 2015; the smallest prime factor of 2015 is 5."
    assert "year gRPC open-sourced" in searches
    assert MemoTool(tmp_path / "memo.db")("get", "grpc_year") == 2015

    # One stream shows the whole delegation tree.
    starts = [e for e in events if isinstance(e, RunStarted)]
    assert [(e.agent, e.depth) for e in starts] == [
        ("manager", 0),
        ("research_specialist", 1),
        ("math_specialist", 1),
    ]
    root = starts[0].run_id
    assert all(e.parent_run_id == root for e in starts[1:])
    child_models = [e.agent for e in events if isinstance(e, ModelOutput) and e.depth == 1]
    assert child_models == ["research_specialist"] * 3 + ["math_specialist"] * 2
    # The specialists' answers reached the manager's code as values.
    observations = [s.observation for s in boss.memory.steps]  # type: ignore[union-attr]
    assert observations[:2] == ["Execution logs:\n2015", "Execution logs:\n5"]
    assert "research_specialist(task: string, additional_args: object | null = None)" in (
        boss.system_prompt()
    )


def test_a_failing_specialist_becomes_an_observation(tmp_path: Path) -> None:
    broken = research_specialist(tmp_path / "memo.db", "I refuse to call tools.")
    boss = manager(
        broken,
        math_specialist(),
        responses=(
            code('year = research_specialist(task="Find the year.")'),
            code("final_answer('could not find the year')"),
        ),
    )
    assert boss.run(TASK) == "could not find the year"
    error = boss.memory.steps[0].error or ""  # type: ignore[union-attr]
    assert "research_specialist could not finish the task (cassette_error)" in error


@tool
def wait_until_cancelled() -> bool:
    """Block like a long tool call until the surrounding run is cancelled (5 s at most)."""
    run = active_run()
    deadline = time.monotonic() + 5
    while run is not None and not run.cancelled and time.monotonic() < deadline:
        time.sleep(0.005)
    return run is not None and run.cancelled


def test_cancelling_the_manager_cancels_the_specialist() -> None:
    slow = CodeAgent(
        [wait_until_cancelled],
        scripted(*[code("print(wait_until_cancelled())")] * 5),
        executor="unsafe-local",
        max_steps=5,
        name="slow",
        description="Slow.",
    )
    boss = manager(slow, responses=(code('slow(task="count")'), code("final_answer(1)")))
    stream = boss.run(TASK, stream=True)
    for event in stream:
        if event.depth == 1 and isinstance(event, ModelOutput):
            break
    stream.close()  # type: ignore[attr-defined]
    assert slow.memory is not None and len(slow.memory.steps) == 1
    assert slow.memory.steps[0].observation == "Execution logs:\nTrue"
    assert len(boss.memory.steps) == 1  # type: ignore[union-attr]


def test_managed_agents_need_unique_names_and_descriptions(tmp_path: Path) -> None:
    research = research_specialist(tmp_path / "m.db")
    with pytest.raises(ConfigError, match="already taken"):
        manager(research, research)
    research.description = ""
    with pytest.raises(ConfigError, match="needs a description"):
        manager(research)
