"""Serving an agent from Python (``mesh.serve``), as the README shows it, and calling it
from other processes: with ``RemoteAgent``, with ``mesh run --address`` (no config needed),
and as the managed agent of a local agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import RemoteAgent, ToolCallingAgent
from tests.support import calls, scripted

TASK = "Shout hello."
AGENT_PY = '''
"""A user's own agent, served from Python."""
import sys

from mesh import ReplayModel, ToolCallingAgent, serve, tool


@tool
def shout(text: str) -> str:
    """Upper-cases text.

    Args:
        text: What to shout.
    """
    return text.upper()


agent = ToolCallingAgent([shout], ReplayModel(sys.argv[1]), name="shouter",
                         description="Shouts what it is given.")
serve(agent, "127.0.0.1:0", on_ready=lambda port: print(f"PORT {port}", flush=True))
'''
CASSETTE = [
    {"cassette": 1},
    {"task": TASK, "turn": 0, "response": {"content": None, "tool_calls": [
        {"id": "c1", "name": "shout", "arguments": json.dumps({"text": "hello"})}]}},
    {"task": TASK, "turn": 1, "response": {"content": None, "tool_calls": [
        {"id": "c2", "name": "final_answer", "arguments": json.dumps({"answer": "HELLO"})}]}},
]  # fmt: skip


@pytest.fixture(scope="module")
def shouter(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    directory = tmp_path_factory.mktemp("shouter")
    (directory / "my_agent.py").write_text(AGENT_PY)
    cassette = directory / "shouter.jsonl"
    cassette.write_text("".join(json.dumps(line) + "\n" for line in CASSETTE))
    process = subprocess.Popen([sys.executable, str(directory / "my_agent.py"), str(cassette)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=directory)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("PORT "), process.stderr.read() if process.stderr else line
    yield f"127.0.0.1:{line.split()[1]}", process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_another_process_calls_it_with_remote_agent(shouter: tuple[str, object]) -> None:
    address, _ = shouter
    remote = RemoteAgent("shouter", address)
    try:
        assert remote.describe().description == "Shouts what it is given."
        assert remote.run(TASK) == "HELLO"
    finally:
        remote.close()


def test_mesh_run_reaches_it_by_address_without_a_config(
    shouter: tuple[str, object], tmp_path: Path
) -> None:
    address, _ = shouter
    done = subprocess.run([str(Path(sys.executable).parent / "mesh"), "run", TASK, "--address",
                           address, "--quiet"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=os.environ.copy())  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "HELLO"


def test_a_local_agent_manages_it_like_a_local_one(shouter: tuple[str, object]) -> None:
    address, _ = shouter
    remote = RemoteAgent("shouter", address, "Shouts what it is given.")
    manager = ToolCallingAgent([], scripted(
        calls(("shouter", {"task": TASK})),
        calls(("final_answer", {"answer": "The shouter said HELLO."})),
    ), managed_agents=[remote], name="manager")  # fmt: skip
    try:
        result = manager.run("Get the shouter to shout hello.", return_full_result=True)
    finally:
        remote.close()
    assert result.output == "The shouter said HELLO."
    assert "shouter" in result.usage_by_agent


def test_it_stops_cleanly_on_sigterm(shouter: tuple[str, subprocess.Popen[str]]) -> None:
    _, process = shouter
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()
