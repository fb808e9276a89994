"""smolagents' names that smolmesh keeps: ``agent.interrupt()``,
``memory.return_full_code()`` and ``memory.get_full_steps()``."""

from __future__ import annotations

import threading

import pytest

from mesh import CodeAgent
from mesh.agents.events import AgentEvent, CodeAction, RunFinished
from mesh.errors import RunCancelledError
from tests.support import code, scripted

TASK = "Count for a long time."


def test_interrupt_cancels_a_run_in_flight_and_its_jail() -> None:
    agent = CodeAgent([], scripted(code("while True:\n    pass")))
    events: list[AgentEvent] = []
    with pytest.raises(RunCancelledError):
        for event in agent.run(TASK, stream=True):
            events.append(event)
            if isinstance(event, CodeAction):  # the jailed code spins now
                threading.Thread(target=agent.interrupt).start()
    (finished,) = [e for e in events if isinstance(e, RunFinished)]
    assert finished.error is not None and finished.error.reason == "run_cancelled"
    assert agent.interrupt() == 0  # nothing left in flight


def test_interrupt_stops_every_run_of_the_agent_and_only_its_own() -> None:
    spinning = scripted(code("while True:\n    pass"))
    agent, other = CodeAgent([], spinning), CodeAgent([], scripted(code("final_answer(1)")))
    started = threading.Barrier(3)
    outcomes: list[BaseException | None] = []

    def run() -> None:
        try:
            for event in agent.run(TASK, stream=True):
                if isinstance(event, CodeAction):
                    started.wait()
            outcomes.append(None)
        except BaseException as err:
            outcomes.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait(timeout=60)
    assert agent.interrupt() == 2
    for thread in threads:
        thread.join(timeout=60)
    assert all(isinstance(o, RunCancelledError) for o in outcomes) and len(outcomes) == 2
    assert other.run(TASK) == 1  # another agent is not touched


def test_full_code_and_full_steps() -> None:
    agent = CodeAgent([], scripted(code("x = 6"), code("print(x * 7)"),
                                   code("final_answer(x * 7)")))  # fmt: skip
    assert agent.run(TASK) == 42
    memory = agent.memory
    assert memory is not None
    assert memory.return_full_code() == "x = 6\n\nprint(x * 7)\n\nfinal_answer(x * 7)"
    steps = memory.get_full_steps()
    assert [s["step_number"] for s in steps] == [1, 2, 3]
    assert steps[1]["observation"] == "Execution logs:\n42"
    assert steps == memory.to_dict()["steps"]
