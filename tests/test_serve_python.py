"""Serving an agent from Python (``mesh.serve``): the README's example, run as written (its
model a recording behind LiteLLM), called from other processes with ``RemoteAgent``, with
``mesh run --address`` (no config needed), and as the managed agent of a local agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import Cassette, RemoteAgent, ReplayServer, ToolCallingAgent
from mesh.launcher import wait_healthy
from tests.support import calls, free_port, scripted

Popen = subprocess.Popen[str]

TASK = "Shout hello."
README_ADDRESS = "127.0.0.1:50070"


def readme_server_example() -> str:
    """The README's example of serving an agent from Python (the block fenced "python
    server.py")."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    return text.split("```python server.py\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def shouter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Popen]]:
    """The README's server.py, running, its model a recording served over the OpenAI API."""
    directory = tmp_path_factory.mktemp("shouter")
    address = f"127.0.0.1:{free_port()}"
    (directory / "server.py").write_text(readme_server_example().replace(README_ADDRESS, address))
    model = Cassette.from_responses(
        [calls(("shout", {"text": "hello"})), calls(("final_answer", {"answer": "HELLO"}))],
        task=TASK,
    )
    with ReplayServer(model) as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.api_base, "OPENAI_API_KEY": "test-key"}
        process = subprocess.Popen(
            [sys.executable, "server.py"],
            cwd=directory,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_healthy(address, 30)
            yield address, process
        finally:
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


def test_it_stops_cleanly_on_sigterm(shouter: tuple[str, Popen]) -> None:
    _, process = shouter
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()
