"""What a project's tool sources cost when a service starts, and a new project's first demo.

Run by hand: ``.venv/bin/python bench/project_startup.py [ROUNDS]``. Times, from the
process's start to SERVING on grpc.health.v1, one tool-calling agent served by
``mesh serve`` with: built-in tools only; plus tools of the user's own by import path;
plus one stdio MCP server (written with the mcp package); plus the tools of another
running service (``remote_tools``, fetched with ListTools). Then ``mesh new`` followed by
``mesh demo`` (two services, two jails, four replayed model calls), whole. Prints a table
of medians (and min-max); asserts nothing.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mesh.launcher import MeshProcesses
from mesh.project import load_mesh_config

MESH = str(Path(sys.executable).parent / "mesh")
TOOLS_PY = '''
from mesh import tool


@tool
def shout(text: str) -> str:
    """Upper-cases text.

    Args:
        text: What to shout.
    """
    return text.upper()
'''
MCP_SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("words")


@server.tool()
def define(word: str) -> str:
    """A definition."""
    return word

if __name__ == "__main__":
    server.run()
'''
BASE = """
[mesh]
replay = "always"
[agents.tools]
kind = "tool-calling"
description = "Serves tools."
address = "127.0.0.1:0"
tools = ["factorial", "celsius_to_fahrenheit"]
cassette = "c.jsonl"
[agents.agent]
kind = "tool-calling"
description = "The agent timed."
address = "127.0.0.1:0"
cassette = "c.jsonl"
"""
VARIANTS = {
    "built-in tools": 'tools = ["factorial", "memo"]\n',
    "+ own tools by import path": 'tools = ["factorial", "memo", "bench_pkg.tools:shout"]\n',
    "+ one stdio MCP server": 'tools = ["factorial", "memo", "bench_pkg.tools:shout"]\n'
    f'mcp = [{{ name = "words", command = "{sys.executable}", args = ["mcp_server.py"] }}]\n',
    "+ remote_tools (ListTools)": 'tools = ["factorial", "memo", "bench_pkg.tools:shout"]\n'
    'remote_tools = [{ agent = "tools", tools = ["celsius_to_fahrenheit"] }]\n',
}


def project(directory: Path, variant: str) -> Path:
    (directory / "bench_pkg").mkdir(exist_ok=True)
    (directory / "bench_pkg" / "__init__.py").write_text("")
    (directory / "bench_pkg" / "tools.py").write_text(TOOLS_PY)
    (directory / "mcp_server.py").write_text(MCP_SERVER)
    (directory / "c.jsonl").write_text("")
    (directory / "mesh.toml").write_text(BASE + VARIANTS[variant])
    return directory / "mesh.toml"


def start_ms(config_path: Path, logs: Path) -> float:
    """One start of the agent (its tool service already up), to SERVING."""
    config = load_mesh_config(config_path)
    with MeshProcesses(config, log_dir=logs, only=("tools",)) as tools:
        env = {"MESH_ADDRESS_TOOLS": tools.addresses["tools"][0]}
        started = time.perf_counter()
        with MeshProcesses(config, log_dir=logs, only=("agent",), env=env):
            return (time.perf_counter() - started) * 1000


def new_project_demo_s(directory: Path) -> float:
    started = time.perf_counter()
    subprocess.run([MESH, "new", "proj"], cwd=directory, check=True, capture_output=True)
    subprocess.run([MESH, "demo"], cwd=directory / "proj", check=True, capture_output=True)
    return time.perf_counter() - started


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        root = Path(tmp)
        for name in ("MESH_TRACE_DIR", "MESH_AUDIT_DIR", "MESH_TOOL_LOG_DIR", "MESH_RUNS_DIR"):
            os.environ[name] = str(root / name.lower())
        os.environ["MESH_MEMO_PATH"] = str(root / "memo.sqlite3")
        rows = []
        for variant in VARIANTS:
            path = project(root, variant)
            times = [start_ms(path, root / "logs") for _ in range(rounds)]
            rows.append((variant, times, "ms"))
        demos = []
        for n in range(rounds):
            (root / f"new{n}").mkdir()
            demos.append(new_project_demo_s(root / f"new{n}"))
        rows.append(("mesh new + mesh demo (whole)", demos, "s"))
    print(f"{'service start-up to SERVING':<34} {'median':>9} {'min-max':>17}")
    for name, values, unit in rows:
        spread = f"{min(values):.0f}-{max(values):.0f}" if unit == "ms" else (
            f"{min(values):.2f}-{max(values):.2f}")  # fmt: skip
        median = statistics.median(values)
        shown = f"{median:.0f} ms" if unit == "ms" else f"{median:.2f} s"
        print(f"{name:<34} {shown:>9} {spread + ' ' + unit:>17}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
