"""``run(task, additional_args=...)``: values beside the task, as variables of a code
agent's code in its jail and described to every model; across the mesh on the run request,
and from a manager's code to a remote specialist in its own process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh import CodeAgent, ToolCallingAgent
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.agents.run_args import MAX_ARGS, MAX_ARGS_BYTES
from mesh.errors import InvalidRequestError
from mesh.rpc.client import AgentClient
from mesh.rpc.remote import RemoteAgent
from tests.support import calls, code, scripted, serving


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


ARGS = {"numbers": [3, 5, 7], "label": "primes", "scale": 1.5, "options": {"round": True}}


def test_a_code_agent_finds_them_as_variables_in_its_jail_and_the_model_reads_them() -> None:
    agent = CodeAgent([], scripted(code("final_answer(f'{label}: {sum(numbers) * scale}')")))
    assert agent.run("Add them up.", additional_args=ARGS) == "primes: 22.5"
    assert agent.memory is not None
    task = agent.memory.task  # what the model read, after the task
    assert task.startswith("Add them up.\n\nYou have been provided with these additional "
                           "arguments, that your code can use directly as variables:")  # fmt: skip
    assert "- numbers (array): [3, 5, 7]" in task and "- options (object)" in task


def test_a_tool_calling_agent_reads_them_with_the_task() -> None:
    agent = ToolCallingAgent([], scripted(calls(("final_answer", {"answer": "15"}))))
    assert agent.run("Add them up.", additional_args={"numbers": [3, 5, 7]}) == "15"
    assert agent.memory is not None
    assert "given with the task:\n- numbers (array): [3, 5, 7]" in agent.memory.task


def test_the_values_are_data_never_code() -> None:
    sneaky = {"text": "'); import os; os.system('touch /tmp/pwned'); ('"}
    agent = CodeAgent([], scripted(code("final_answer(text)")))
    assert agent.run("Echo.", additional_args=sneaky) == sneaky["text"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"1st": 1}, "must be a Python identifier"),
        ({"_hidden": 1}, "must be a Python identifier"),
        ({"class": 1}, "must be a Python identifier"),
        ({"final_answer": 1}, "is taken by a tool"),
        ({"x": object()}, "must be JSON values"),
        ({"x": float("nan")}, "must be JSON values"),
        ({f"v{i}": i for i in range(MAX_ARGS + 1)}, f"at most {MAX_ARGS}"),
        ({"big": "x" * MAX_ARGS_BYTES}, f"over {MAX_ARGS_BYTES} bytes"),
        ({"deep": nested(100)}, "nested too deeply"),
    ],
)
def test_bad_arguments_are_refused_saying_which_never_what(args: dict[str, Any], says: str) -> None:
    agent = ToolCallingAgent([], scripted("unused"))
    with pytest.raises(InvalidRequestError, match=says) as raised:
        agent.run("t", additional_args=args)
    assert len(str(raised.value)) < 400  # the value is never repeated


SPECIALIST = """
import sys
from mesh import Cassette, ChatMessage, CodeAgent, ModelResponse, ReplayModel, TokenUsage, serve

def says(text):
    return ModelResponse(ChatMessage("assistant", text), TokenUsage(10, 1))

code = "Sum them.\\n```python\\nfinal_answer(sum(numbers) * factor)\\n```"
model = ReplayModel(Cassette.from_responses([says(code)] * 4))
agent = CodeAgent([], model, name="summer", description="Sums numbers it is given.")
serve(agent, sys.argv[1])
"""


@pytest.fixture(scope="module")
def summer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A code agent served in its own process (its code runs in its own jail)."""
    with serving(SPECIALIST, tmp_path_factory.mktemp("summer")) as (address, _):
        yield address


def test_they_travel_typed_on_the_run_request(summer: str) -> None:
    with AgentClient([summer], agent="summer") as client:
        assert client.run("Sum.", additional_args={"numbers": [1, 2, 3], "factor": 2}).answer == 12
        events = list(client.run_stream("Sum.", additional_args={"numbers": [4], "factor": 1}))
    assert [e.answer for e in events if type(e).__name__ == "FinalAnswer"] == [4]  # type: ignore[attr-defined]


def test_a_manager_hands_them_to_a_remote_specialist_from_its_code(summer: str) -> None:
    remote = RemoteAgent("summer", summer, description="Sums numbers it is given.")
    manager = CodeAgent([], scripted(code(
        "total = summer(task='Sum these.', additional_args={'numbers': [10, 20], 'factor': 3})\n"
        "final_answer(total)")), managed_agents=[remote])  # fmt: skip
    try:
        assert manager.run("Delegate the sum.") == 90
    finally:
        remote.close()


@pytest.mark.parametrize(
    ("text", "says"),
    [("[1, 2]", "must be a JSON object"), ('{"_x": 1}', "Python identifier"),
     ("{not json", "not usable JSON"), ('{"x": ' * 100 + "1" + "}" * 100, "nested too deeply")],
)  # fmt: skip
def test_the_service_refuses_bad_ones_as_invalid_argument(
    summer: str, text: str, says: str
) -> None:
    with grpc.insecure_channel(summer) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as raised:
            stub.Run(pb.RunRequest(task="Sum.", additional_args_json=text), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (raised.value.details() or "")


def test_mesh_run_sends_them_from_the_command_line(summer: str, tmp_path: Path) -> None:
    mesh = str(Path(sys.executable).parent / "mesh")  # run where no mesh.toml is
    done = subprocess.run([mesh, "run", "--address", summer, "--quiet", "--args",
                           '{"numbers": [1, 2], "factor": 2}', "Sum."],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"
    bad = subprocess.run([mesh, "run", "--address", summer, "--args", "[1]", "Sum."],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 1 and "must be a JSON object" in bad.stderr
    assert "Traceback" not in bad.stderr
