"""A user's project as real services: tools declared from another gRPC service, and the
governance trail of a changed definition across restarts, read with ``mesh changes``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.errors import AgentUnavailableError
from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config
from mesh.rpc.remote_tool import fetch_remote_tools
from tests.support import alive, calls, wait_until

MESH = str(Path(sys.executable).parent / "mesh")
TASK = "What is 5!?"
CONFIG = """
[mesh]
entry = "boss"
replay = "always"

[agents.calc]
kind = "tool-calling"
description = "Runs arithmetic tools for others."
address = "127.0.0.1:0"
tools = ["factorial", "celsius_to_fahrenheit"]
cassette = "calc.jsonl"

[agents.boss]
kind = "tool-calling"
description = "Answers with tools it borrows."
address = "127.0.0.1:0"
instructions_file = "boss.md"
cassette = "boss.jsonl"
remote_tools = [{ agent = "calc", tools = ["factorial"] }]
"""


def write_project(root: Path) -> Path:
    (root / "mesh.toml").write_text(CONFIG)
    (root / "calc.jsonl").write_text("")
    (root / "boss.md").write_text("Borrow tools.\nAnswer with a number.\n")
    boss = [calls(("factorial", {"n": 5})), calls(("final_answer", {"answer": "120"}))]
    lines = "".join(
        json.dumps({"task": TASK, "turn": n, "response": {
            "content": None, "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments}
                                            for c in r.message.tool_calls]}}) + "\n"
        for n, r in enumerate(boss)
    )  # fmt: skip
    (root / "boss.jsonl").write_text(lines)
    return root / "mesh.toml"


def mesh(*args: str, cwd: Path, running: MeshProcesses | None = None
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The ``mesh`` command, told where ``running``'s agents listen (their ports were free)."""
    env = os.environ.copy()
    for name, addresses in (running.addresses if running else {}).items():
        env[f"MESH_ADDRESS_{name.upper()}"] = ",".join(addresses)
    return subprocess.run([MESH, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=env)  # fmt: skip


def test_tools_of_another_service_are_declared_in_the_config(tmp_path: Path) -> None:
    config = load_mesh_config(write_project(tmp_path))
    with MeshProcesses(config, log_dir=tmp_path / "logs") as running:
        boss = running.addresses["boss"][0]
        agents = mesh(
            "agents", "--config", str(tmp_path / "mesh.toml"), cwd=tmp_path, running=running
        )
        done = mesh("run", TASK, "--address", boss, "--config", str(tmp_path / "mesh.toml"),
                    cwd=tmp_path)  # fmt: skip
    assert "tool factorial(n: integer) -> integer" in agents.stdout
    assert "celsius_to_fahrenheit" not in agents.stdout.split("boss", 1)[1].split("calc")[0]
    assert done.returncode == 0, done.stderr
    assert "<- factorial: 120" in done.stdout  # computed by calc, called over CallTool


def test_a_tool_service_that_is_down_fails_the_start_naming_the_field(tmp_path: Path) -> None:
    path = write_project(tmp_path)
    path.write_text(path.read_text().replace('remote_tools = [{ agent = "calc", tools = '
                                             '["factorial"] }]', 'remote_tools = [{ address = '
                                             '"127.0.0.1:9", timeout_s = 1 }]'))  # fmt: skip
    config = load_mesh_config(path)
    with pytest.raises(AgentUnavailableError, match="boss exited during start-up"):
        MeshProcesses(config, log_dir=tmp_path / "logs", only=("boss",)).start()
    log = next((tmp_path / "logs").glob("boss-*.log")).read_text()
    assert "agents.boss.remote_tools[0]: " in log and "127.0.0.1:9" in log
    assert "Traceback" not in log


def test_a_changed_definition_shows_in_mesh_changes_after_a_restart(tmp_path: Path) -> None:
    config_path = write_project(tmp_path)
    config = load_mesh_config(config_path)
    with MeshProcesses(config, log_dir=tmp_path / "logs"):
        pass
    (tmp_path / "boss.md").write_text("Borrow tools.\nAnswer with a number and its unit.\n")
    config_path.write_text(config_path.read_text().replace('tools = ["factorial"]',
                                                           'tools = ["factorial", '
                                                           '"celsius_to_fahrenheit"]'))  # fmt: skip
    config = load_mesh_config(config_path)
    with MeshProcesses(config, log_dir=tmp_path / "logs2") as running:
        boss = running.addresses["boss"][0]
        changes = mesh("changes", "boss", "--diff", "--agent-address", boss,
                       "--config", str(config_path), cwd=tmp_path)  # fmt: skip
    assert changes.returncode == 0, changes.stderr
    rows = [line for line in changes.stdout.splitlines() if not line.startswith("    ")]
    assert len(rows) == 4, rows
    assert [row.split("  boss  ")[1].split(" sha256:")[0] for row in rows] == [
        "configured ", "instructions changed ", "tool configured celsius_to_fahrenheit",
        "configured "]  # fmt: skip
    assert all(row.endswith("by config") for row in rows)
    assert re.search(r"instructions changed  sha256:\w{12} -> sha256:\w{12}", rows[1])
    assert "    -Answer with a number." in changes.stdout
    assert "    +Answer with a number and its unit." in changes.stdout


MCP_SERVER = Path(__file__).parent / "mcp_servers" / "tool_server.py"


def test_an_mcp_server_lives_and_dies_with_its_service(tmp_path: Path) -> None:
    """Started with the service, its tools served like any (ListTools, CallTool), its
    environment without the service's secrets, and gone when the service stops, whether
    asked to or killed."""
    state = tmp_path / "state"
    state.mkdir()
    path = write_project(tmp_path)
    path.write_text(path.read_text().replace(
        'remote_tools = [{ agent = "calc", tools = ["factorial"] }]',
        f'mcp = [{{ name = "files", command = "{sys.executable}", args = ["{MCP_SERVER}", '
        f'"--state", "{state}"], include = ["echo", "env"] }}]'))  # fmt: skip
    config = load_mesh_config(path)
    secrets = {"MESH_TOKEN": "mesh-token-not-for-mcp", "OPENAI_API_KEY": "sk-not-for-mcp"}
    for stop in ("SIGTERM", "SIGKILL"):
        with MeshProcesses(config, log_dir=tmp_path / stop, only=("boss",), env=secrets) as up:
            server = int((state / "pid").read_text())
            assert alive({server})
            address = up.addresses["boss"][0]
            tools = {t.name: t for t in fetch_remote_tools(address)}
            assert set(tools) == {"echo", "env"}
            assert tools["echo"](text="hi", times=2) == "hi hi"
            assert tools["env"](name="MESH_TOKEN") == "<unset>"
            assert tools["env"](name="OPENAI_API_KEY") == "<unset>"
            if stop == "SIGKILL":
                up.services[0].process.kill()
        wait_until(lambda: not alive({server}), timeout_s=20)  # noqa: B023
    log = (tmp_path / "SIGTERM" / "boss-0.log").read_text()
    assert "[files] tool_server: started" in log  # its stderr is in the service's log
