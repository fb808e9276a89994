"""``mesh record``: a project's mesh runs against a live model (here the project's own
``ReplayServer``, an OpenAI-compatible server on loopback, standing in for one), each
agent's cassette is written, and the same task then replays offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mesh import Cassette, ReplayServer
from tests.support import calls

MESH = str(Path(sys.executable).parent / "mesh")
TASK = "Greet Ada."
SUBTASK = "Greet the person named Ada."
CONFIG = """
[mesh]
entry = "manager"
task = "Greet Ada."

[agents.manager]
kind = "tool-calling"
description = "Delegates greetings."
address = "127.0.0.1:0"
managed_agents = ["greeter"]
cassette = "services/manager/cassette.jsonl"

[agents.greeter]
kind = "tool-calling"
description = "Greets people by name."
address = "127.0.0.1:0"
tools = ["services.greeter.tools:greet"]
cassette = "services/greeter/cassette.jsonl"
"""
TOOLS = '''
from mesh import tool


@tool
def greet(name: str) -> str:
    """A greeting.

    Args:
        name: Whom to greet.
    """
    return f"Hello, {name}!"
'''


def live_model() -> Cassette:
    """What the live model answers: the manager's turns and the greeter's."""
    manager = Cassette.from_responses([calls(("greeter", {"task": SUBTASK})),
                                       calls(("final_answer", {"answer": "Hello, Ada!"}))],
                                      task=TASK)  # fmt: skip
    greeter = Cassette.from_responses([calls(("greet", {"name": "Ada"})),
                                       calls(("final_answer", {"answer": "Hello, Ada!"}))],
                                      task=SUBTASK)  # fmt: skip
    return Cassette([*manager.entries, *greeter.entries])


def write_project(root: Path) -> None:
    (root / "mesh.toml").write_text(CONFIG)
    for package in ("services", "services/manager", "services/greeter"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    (root / "services" / "greeter" / "tools.py").write_text(textwrap.dedent(TOOLS))


def mesh(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "MESH_MODEL"))}
    return subprocess.run([MESH, *args], cwd=root, capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip


def test_record_then_replay_offline(tmp_path: Path) -> None:
    write_project(tmp_path)
    with ReplayServer(live_model()) as server:
        done = mesh(tmp_path, "record", "--api-base", server.api_base,
                    "--model", "openai/gpt-4o-mini")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "final answer: Hello, Ada!" in done.stdout
        assert "manager: 2 model call(s) recorded" in done.stderr
        assert "greeter: 2 model call(s) recorded" in done.stderr
        again = mesh(tmp_path, "record", "--api-base", server.api_base)
        assert again.returncode == 0, again.stderr
    for agent, task in (("manager", TASK), ("greeter", SUBTASK)):
        cassette = Cassette.load(tmp_path / "services" / agent / "cassette.jsonl")
        assert [(e.task, e.turn) for e in cassette.entries] == [(task, 0), (task, 1)]
    recorded = (tmp_path / "services" / "greeter" / "cassette.jsonl").read_text().splitlines()
    assert json.loads(recorded[1])["request"], "a recording keeps the request for people to read"

    replay = mesh(tmp_path, "demo")  # no model key, no server: the cassettes answer
    assert replay.returncode == 0, replay.stderr
    assert "REPLAYS recorded model outputs" in replay.stderr
    assert "final answer: Hello, Ada!" in replay.stdout
    assert "<- greet: Hello, Ada!" in replay.stdout


def test_record_needs_a_cassette_path_for_every_agent(tmp_path: Path) -> None:
    write_project(tmp_path)
    config = tmp_path / "mesh.toml"
    config.write_text(config.read_text().replace('cassette = "services/greeter/cassette.jsonl"',
                                                 ""))  # fmt: skip
    done = mesh(tmp_path, "record", "--api-base", "http://127.0.0.1:9/v1")
    assert done.returncode == 1
    assert "agents.greeter.cassette: name the file to record this agent to" in done.stderr
