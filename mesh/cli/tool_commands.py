"""``mesh tools``: add, replace and remove an agent's tools at run time; ``mesh changes``: the
history of every agent's definition (instructions and tools) and of those run-time changes."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from mesh.config import MeshConfig
from mesh.errors import ConfigError, NotFoundError, ToolDefinitionError
from mesh.project import load_mesh_config
from mesh.rpc.client import AgentClient
from mesh.rpc.tool_change import ToolChange

__all__ = ["add_history_options", "add_tool", "add_tool_commands", "remove_tool", "tool_history"]


def add_tool_commands(tools: argparse.ArgumentParser) -> None:
    verbs = tools.add_subparsers(required=True, metavar="VERB")

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help)
        sub.add_argument(
            "--config",
            type=Path,
            help="mesh config (default ./mesh.toml, else the bundled seed mesh)",
        )
        sub.add_argument("--agent-address", help="host:port of the agent (default: the config)")
        return sub

    add = verb("add", "add (or --replace) a tool served by another service")
    add.add_argument("agent", help="the agent that gets the tool")
    add.add_argument("name", help="the tool's name for this agent")
    add.add_argument("--address", required=True, help="host:port of the service running it")
    add.add_argument("--remote-name", default="", help="its name there (default: NAME)")
    add.add_argument("--schema", help="JSON file: description, inputs, output_type (default: "
                     "ask the service with ListTools)")  # fmt: skip
    add.add_argument("--replace", action="store_true", help="replace a tool of that name")
    add.set_defaults(func=add_tool)

    remove = verb("remove", "remove a tool")
    remove.add_argument("agent")
    remove.add_argument("name")
    remove.set_defaults(func=remove_tool)

    add_history_options(verb("history", "the same as `mesh changes`"))


def add_history_options(history: argparse.ArgumentParser) -> None:
    """``mesh changes`` (and its old name ``mesh tools history``)."""
    history.add_argument("agents", nargs="*", help="agents (default: every agent of the config)")
    history.add_argument("--json", action="store_true", help="one JSON object per change")
    history.add_argument("--diff", action="store_true", help="show how instructions changed")
    history.set_defaults(func=tool_history)


def add_tool(args: argparse.Namespace) -> int:
    config = load_mesh_config(args.config)
    remote_name = args.remote_name or args.name
    definition = (_definition_from_file(args.schema) if args.schema
                  else _definition_from(config, args.address, remote_name))  # fmt: skip
    definition = {**definition, "name": args.name}
    with _agent(config, args.agent, args.agent_address) as client:
        try:
            change = client.add_tool(definition, args.address, remote_name=remote_name,
                                     replace=args.replace, timeout_s=10.0)  # fmt: skip
        except ToolDefinitionError as err:
            where = f"--schema {args.schema}" if args.schema else f"{args.address}: {remote_name}"
            raise ConfigError(f"{where}: {err.message}") from err
    print(_row(change))
    return 0


def remove_tool(args: argparse.Namespace) -> int:
    config = load_mesh_config(args.config)
    with _agent(config, args.agent, args.agent_address) as client:
        change = client.remove_tool(args.name, timeout_s=10.0)
    print(_row(change))
    return 0


def tool_history(args: argparse.Namespace) -> int:
    config = load_mesh_config(args.config)
    changes: list[ToolChange] = []
    for name in args.agents or list(config.agents):
        with _agent(config, name, args.agent_address) as client:
            changes += client.tool_history(timeout_s=10.0)
    for change in sorted(changes, key=lambda c: c.timestamp):
        if args.json:
            print(json.dumps({"timestamp": change.timestamp, "agent": change.agent,
                              "action": change.action, "tool": change.tool,
                              "caller": change.caller, "schema_sha256": change.schema_sha256,
                              "old_sha256": change.old_sha256, "address": change.address,
                              "diff": change.diff}))  # fmt: skip
        else:
            print(_row(change))
            if args.diff and change.diff:
                print("    " + change.diff.rstrip("\n").replace("\n", "\n    "))
    return 0


def _row(change: ToolChange) -> str:
    when = datetime.datetime.fromtimestamp(change.timestamp, datetime.UTC)
    where = f" -> {change.address}" if change.address else ""
    sha = f" sha256:{change.schema_sha256[:12]}" if change.schema_sha256 else ""
    if change.old_sha256:
        sha = f" sha256:{change.old_sha256[:12]} ->{sha or ' (gone)'}"
    action = change.action.replace("_", " ")
    return (f"{when:%Y-%m-%d %H:%M:%S}Z  {change.agent}  {action} {change.tool}"
            f"{where}{sha}  by {change.caller}")  # fmt: skip


def _agent(config: MeshConfig, name: str, address: str | None) -> AgentClient:
    """A client of the agent ``name`` (at ``address`` if given, else where the config says)."""
    addresses = address or list(config.agent(name).addresses)
    return AgentClient(addresses, security=config.security, label=name)


def _definition_from(config: MeshConfig, address: str, name: str) -> dict[str, Any]:
    """The tool's definition as the service running it declares it."""
    with AgentClient(address, security=config.security, label=address) as client:
        tools = client.list_tools(timeout_s=10.0)
    for definition in tools:
        if definition["name"] == name:
            return definition
    known = ", ".join(t["name"] for t in tools) or "none"
    raise NotFoundError(f"{address} has no tool {name!r} (it has {known}); give --schema")


def _definition_from_file(path: str) -> dict[str, Any]:
    try:
        definition = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"--schema {path}: {err!r}") from err
    if not isinstance(definition, dict):
        raise ConfigError(f"--schema {path}: expected a JSON object (description, inputs, "
                          "output_type)")  # fmt: skip
    return definition
