"""``mesh tools``: add, replace and remove an agent's tools at run time; ``mesh changes``: the
history of every agent's definition (instructions and tools) and of those run-time changes."""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.config import MeshConfig
from mesh.errors import ConfigError, NotFoundError, ToolDefinitionError
from mesh.project import load_mesh_config
from mesh.rpc.convert import definition_to_proto, seconds_from_proto, tool_change_action_name
from mesh.rpc.remote import channel_target
from mesh.rpc.security import open_channel
from mesh.rpc.status import error_from_rpc

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
    spec = _spec_from_file(args.schema) if args.schema else _spec_from(config, args.address,
                                                                        remote_name)  # fmt: skip
    spec.name = args.name
    request = pb.AddToolRequest(spec=spec, address=args.address, replace=args.replace,
                                remote_name=remote_name)  # fmt: skip
    with _agent(config, args.agent, args.agent_address) as (stub, metadata):
        change = _call(stub.AddTool, request, metadata, args.agent).change
    print(_row(change))
    return 0


def remove_tool(args: argparse.Namespace) -> int:
    config = load_mesh_config(args.config)
    with _agent(config, args.agent, args.agent_address) as (stub, metadata):
        change = _call(stub.RemoveTool, pb.RemoveToolRequest(name=args.name), metadata,
                       args.agent).change  # fmt: skip
    print(_row(change))
    return 0


def tool_history(args: argparse.Namespace) -> int:
    config = load_mesh_config(args.config)
    changes: list[pb.ToolChange] = []
    for name in args.agents or list(config.agents):
        with _agent(config, name, args.agent_address) as (stub, metadata):
            changes += _call(stub.ToolHistory, pb.ToolHistoryRequest(), metadata, name).changes
    for change in sorted(changes, key=lambda c: seconds_from_proto(c.time)):
        if args.json:
            print(json.dumps({"timestamp": seconds_from_proto(change.time), "agent": change.agent,
                              "action": tool_change_action_name(change.action),
                              "tool": change.tool,
                              "caller": change.caller, "schema_sha256": change.schema_sha256,
                              "old_sha256": change.old_sha256, "address": change.address,
                              "diff": change.diff}))  # fmt: skip
        else:
            print(_row(change))
            if args.diff and change.diff:
                print("    " + change.diff.rstrip("\n").replace("\n", "\n    "))
    return 0


def _row(change: pb.ToolChange) -> str:
    when = datetime.datetime.fromtimestamp(seconds_from_proto(change.time), datetime.UTC)
    where = f" -> {change.address}" if change.address else ""
    sha = f" sha256:{change.schema_sha256[:12]}" if change.schema_sha256 else ""
    if change.old_sha256:
        sha = f" sha256:{change.old_sha256[:12]} ->{sha or ' (gone)'}"
    action = tool_change_action_name(change.action).replace("_", " ")
    return (f"{when:%Y-%m-%d %H:%M:%S}Z  {change.agent}  {action} {change.tool}"
            f"{where}{sha}  by {change.caller}")  # fmt: skip


def _agent(config: MeshConfig, name: str, address: str | None) -> Any:
    """A connection to the agent ``name`` (at ``address`` if given, else where the config says)."""
    return _connect(config, channel_target(address or list(config.agent(name).addresses)))


@contextmanager
def _connect(config: MeshConfig, target: str) -> Iterator[tuple[Any, tuple[tuple[str, str], ...]]]:
    metadata = config.security.call_metadata() if config.security else ()
    with open_channel(target, config.security) as channel:
        yield agent_pb2_grpc.AgentServiceStub(channel), metadata  # type: ignore[no-untyped-call]


def _call(method: Any, request: Any, metadata: Any, who: str) -> Any:
    try:
        return method(request, timeout=10.0, metadata=metadata)
    except grpc.RpcError as err:
        raise error_from_rpc(err, who) from err


def _spec_from(config: MeshConfig, address: str, name: str) -> pb.ToolSpec:
    """The tool's spec as the service running it declares it."""
    with _connect(config, channel_target(address)) as (stub, metadata):
        tools = _call(stub.ListTools, pb.ListToolsRequest(), metadata, address).tools
    for spec in tools:
        if spec.name == name:
            found = pb.ToolSpec()
            found.CopyFrom(spec)
            return found
    known = ", ".join(t.name for t in tools) or "none"
    raise NotFoundError(f"{address} has no tool {name!r} (it has {known}); give --schema")


def _spec_from_file(path: str) -> pb.ToolSpec:
    try:
        return definition_to_proto(json.loads(Path(path).read_text(encoding="utf-8")))
    except ToolDefinitionError as err:
        raise ConfigError(f"--schema {path}: {err.message}") from err
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"--schema {path}: {err!r}") from err
