"""``mesh record [TASK]``: record each agent's model calls so that a task replays offline.

The whole mesh runs against a live model (the config's, or ``--model`` and
``--api-base``: any LiteLLM id, or an OpenAI-compatible server), each
service writing its model calls to a file of its own; once the task is done,
each agent's cassette (``cassette`` in the config) gets the new recording,
replacing any earlier one of the same task, and keeping recordings of other
tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from mesh.cli.console import say
from mesh.cli.mesh_commands import on_free_ports, run
from mesh.config import MeshConfig
from mesh.errors import ConfigError
from mesh.launcher import MeshProcesses
from mesh.models import Cassette
from mesh.models.replay import CASSETTE_VERSION
from mesh.project import load_mesh_config

__all__ = ["add_record_command", "record_task"]


def add_record_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    record = commands.add_parser("record", help="run the mesh on a live model and write each "
                                 "agent's cassette")  # fmt: skip
    record.add_argument("task", nargs="?", help="the task (default: the config's task)")
    record.add_argument("--config", type=Path, help="mesh config (default ./mesh.toml)")
    record.add_argument("--model", help="LiteLLM model id for every agent without its own")
    record.add_argument("--api-base", help="an OpenAI-compatible server for every agent")
    record.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds")
    record.set_defaults(func=record_task)


def record_task(args: argparse.Namespace) -> int:

    overrides = {"MESH_MODEL": args.model, "MESH_API_BASE": args.api_base}
    env = {key: value for key, value in overrides.items() if value}
    os.environ.update(env)  # this process loads the config as the services will
    config = on_free_ports(load_mesh_config(args.config))
    task = args.task or config.task
    if not task:
        raise ConfigError("give a task (the config names no default task in [mesh] task)")
    _check_cassettes(config)
    with tempfile.TemporaryDirectory(prefix="mesh-record-") as scratch:
        files = {name: Path(scratch) / f"{name}.jsonl" for name in config.agents}
        serve_args = {name: ("--record", str(path)) for name, path in files.items()}
        with MeshProcesses(config, log_dir=Path(scratch) / "logs", env=env,
                           serve_args=serve_args) as mesh:  # fmt: skip
            say(f"Recording {task!r} on a live model ...")
            status = run(argparse.Namespace(config=args.config, task=task, quiet=False,
                                            timeout=args.timeout, live=True, wait=0.0, args="",
                                            address=mesh.addresses[config.entry][0]))  # fmt: skip
        if status != 0:
            return status
        for name, path in files.items():
            cassette = config.agent(name).cassette
            assert cassette is not None  # _check_cassettes
            calls = _merge(path, cassette)
            if calls:
                say(f"{name}: {calls} model call(s) recorded in {cassette}")
    return 0


def _check_cassettes(config: MeshConfig) -> None:
    for name, agent in config.agents.items():
        if agent.cassette is None:
            raise ConfigError(f"agents.{name}.cassette: name the file to record this agent to")


def _merge(recorded: Path, cassette: Path) -> int:
    """Put a recording into ``cassette``, replacing earlier recordings of the same tasks."""
    if not recorded.exists():
        return 0
    new = [json.loads(line) for line in recorded.read_text(encoding="utf-8").splitlines()[1:]
           if line.strip()]  # fmt: skip
    if not new:
        return 0
    tasks = {entry.get("task") for entry in new}
    kept: list[dict[str, object]] = []
    if cassette.exists():
        Cassette.load(cassette)  # refuse to rewrite a file that is not a cassette
        lines = cassette.read_text(encoding="utf-8").splitlines()
        kept = [json.loads(line) for line in lines[1:] if line.strip()]
        kept = [entry for entry in kept if entry.get("task") not in tasks]
        header = json.loads(lines[0]) if lines else {}
    else:
        header = {}
    header = {"cassette": CASSETTE_VERSION, "description": header.get("description", "")}
    text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in [header, *kept, *new])
    cassette.parent.mkdir(parents=True, exist_ok=True)
    partial = cassette.with_name(cassette.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(cassette)
    return len(new)
