"""``mesh new DIR``: the project it writes, and that project working from a pip-installed
smolmesh.

The template's package is named ``services``, like the repository's seed, so
nothing here imports it into the test process (``mesh/references.py`` refuses
two ``services`` in one process); whatever imports it runs in a subprocess
whose working directory is the new project.

The end-to-end test runs smolmesh installed from a wheel of this checkout
(``tests/installed.py``), because that is how users get it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mesh import Cassette
from mesh.cli.new_project import add_new_command
from mesh.errors import ConfigError
from mesh.project import load_mesh_config
from tests.installed import subprocess_env

ROOT = Path(__file__).parent.parent
TEMPLATE_FILES = {
    ".gitignore",
    "README.md",
    "mesh.toml",
    "pyproject.toml",
    "services/__init__.py",
    "services/manager/__init__.py",
    "services/manager/cassette.jsonl",
    "services/manager/instructions.md",
    "services/text_specialist/__init__.py",
    "services/text_specialist/cassette.jsonl",
    "services/text_specialist/instructions.md",
    "services/text_specialist/tools.py",
    "tests/test_replay.py",
}
ANSWER = "The note has 13 words in 2 sentences; about 4 seconds to read at 200 words per minute."


def mesh_new(directory: Path, *options: str) -> int:
    """``mesh new`` through its own subcommand, as the ``mesh`` parser will run it."""
    parser = argparse.ArgumentParser(prog="mesh")
    add_new_command(parser.add_subparsers(required=True))
    args = parser.parse_args(["new", str(directory), *options])
    return int(args.func(args))


def files_under(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def test_new_writes_the_project_and_says_what_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mesh_new(tmp_path / "proj") == 0
    assert files_under(tmp_path / "proj") == TEMPLATE_FILES
    out = capsys.readouterr().out
    assert f"cd {tmp_path / 'proj'}" in out and "mesh demo" in out and "pytest" in out
    readme = (tmp_path / "proj" / "README.md").read_text()
    for command in ("mesh demo", "pytest", "mesh record", "mesh up", "mesh serve", "@tool"):
        assert command in readme


def test_an_existing_empty_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    assert mesh_new(tmp_path / "proj") == 0
    assert files_under(tmp_path / "proj") == TEMPLATE_FILES


def test_a_directory_that_is_not_empty_is_refused_without_force(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty; choose a new directory, or pass --force"):
        mesh_new(project)
    assert files_under(project) == {"notes.txt"}

    assert mesh_new(project, "--force") == 0  # beside the user's files, which stay as they were
    assert files_under(project) == TEMPLATE_FILES | {"notes.txt"}
    assert (project / "notes.txt").read_text() == "mine"


def test_force_never_overwrites_a_file(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "services").mkdir(parents=True)
    (project / "mesh.toml").write_text("# my mesh\n")
    (project / "services" / "__init__.py").write_text("# mine\n")
    with pytest.raises(ConfigError) as caught:
        mesh_new(project, "--force")
    assert "already has mesh.toml, services/__init__.py; not overwriting" in caught.value.message
    # Checked before writing anything: no half-made project beside the user's files.
    assert files_under(project) == {"mesh.toml", "services/__init__.py"}
    assert (project / "mesh.toml").read_text() == "# my mesh\n"


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        mesh_new(tmp_path / "taken")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "tests").write_text("a file where the template has a directory")
    with pytest.raises(ConfigError, match=re.escape("already has tests/test_replay.py")):
        mesh_new(project, "--force")


def test_the_template_config_loads_and_its_cassettes_agree(tmp_path: Path) -> None:
    """Loading checks every field but imports nothing, so it is safe in this process."""
    mesh_new(tmp_path / "proj")
    config = load_mesh_config(tmp_path / "proj" / "mesh.toml")
    assert config.entry == "manager" and config.replay == "auto"
    manager, specialist = config.agent("manager"), config.agent("text_specialist")
    assert manager.kind == "code" and manager.managed_agents == ("text_specialist",)
    assert specialist.tools == ("services.text_specialist.tools",)
    assert manager.instructions and specialist.instructions
    addresses = [a for agent in config.agents.values() for a in agent.addresses]
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert len(set(addresses)) == len(addresses)
    # The manager's replayed code sends the specialist exactly the task its cassette knows.
    assert manager.cassette is not None and specialist.cassette is not None
    first = Cassette.load(manager.cassette).entries[0]
    assert first.task == config.task and first.response is not None
    code = first.response.message.content or ""
    sent = re.search(r'text_specialist\(task=("(?:[^"\\]|\\.)*")\)', code)
    assert sent is not None
    assert {e.task for e in Cassette.load(specialist.cassette).entries} == {json.loads(sent[1])}


def test_the_template_agents_build_in_their_own_process(tmp_path: Path) -> None:
    """Importing the project's ``services`` (its tool, as the config names it) is for a
    process whose working directory is the project, like ``mesh serve``."""
    mesh_new(tmp_path / "proj")
    script = textwrap.dedent("""
        from contextlib import ExitStack
        from mesh.project import build_agent, load_mesh_config
        config = load_mesh_config()
        with ExitStack() as resources:
            for name in config.agents:
                agent = build_agent(config, name, resources=resources)
                print(name, type(agent).__name__, agent.model.model_id, sorted(agent.tools),
                      sorted(agent.managed_agents))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / "proj", text=True,
                          capture_output=True, env=subprocess_env(), timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "manager CodeAgent replay:cassette.jsonl ['final_answer'] ['text_specialist']",
        "text_specialist CodeAgent replay:cassette.jsonl ['final_answer', 'text_stats'] []",
    ]


# --- end to end, from a wheel -------------------------------------------------------------


def test_a_new_project_runs_from_a_pip_installed_smolmesh(installed: Path, tmp_path: Path) -> None:
    env = subprocess_env()
    new = subprocess.run([str(installed / "mesh"), "new", "proj"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert new.returncode == 0, (
        f"{new.stderr}\n(is add_new_command(commands) wired into mesh/cli/__init__.py?)"
    )
    project = tmp_path / "proj"
    assert files_under(project) == TEMPLATE_FILES
    assert "cd proj" in new.stdout

    demo = subprocess.run([str(installed / "mesh"), "demo"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert "REPLAYS recorded model outputs" in demo.stderr
    # The user's own tool ran, in the specialist's sandbox, called over gRPC by the manager.
    assert "<- text_stats: {'words': 13, 'sentences': 2, 'reading_seconds': 4}" in demo.stdout
    assert f"[manager] final answer: {ANSWER}" in demo.stdout

    tests = subprocess.run([str(installed / "python"), "-m", "pytest", "-q", "-p",
                            "no:cacheprovider"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout
