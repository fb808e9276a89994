"""Resolving an agent's tools from its config: built-ins by name, a user's tools by import
path, MCP servers and other gRPC services.

Every source lands in one dict, so two tools with one name fail at start-up,
naming both sources, instead of one silently hiding the other.
"""

from __future__ import annotations

import inspect
import sys
from contextlib import ExitStack
from types import ModuleType
from typing import Any

from mesh.config import AgentConfig, MeshConfig
from mesh.errors import ConfigError, MeshError
from mesh.mcp import MCPClient
from mesh.project.builtin_tools import BUILTIN_TOOLS
from mesh.references import import_module, import_object, is_reference
from mesh.rpc.remote_tool import fetch_remote_tools
from mesh.tools.base import Tool

__all__ = ["resolve_tools", "tools_of"]


def resolve_tools(config: MeshConfig, agent: AgentConfig, resources: ExitStack) -> list[Tool]:
    """The agent's tools in config order; MCP clients and channels close with ``resources``."""
    where = f"agents.{agent.name}"
    found: dict[str, tuple[Tool, str]] = {}

    def add(tools: list[Tool], source: str) -> None:
        add_sourced([(tool, source) for tool in tools])

    def add_sourced(tools: list[tuple[Tool, str]]) -> None:
        for tool, source in tools:
            if tool.name in found:
                raise ConfigError(f"{source}: a second tool named {tool.name!r} "
                                  f"(the first came from {found[tool.name][1]})")  # fmt: skip
            found[tool.name] = (tool, source)

    for n, entry in enumerate(agent.tools):
        add_sourced(_tools_from_entry(entry, f"{where}.tools[{n}]", config))
    for n, params in enumerate(agent.mcp):
        client = MCPClient(params)
        resources.callback(client.close)
        add(_started(client, f"{where}.mcp[{n}]"), f"{where}.mcp[{n}] ({params.name})")
    for n, remote in enumerate(agent.remote_tools):
        source = f"{where}.remote_tools[{n}]"
        address = remote.address or ",".join(config.agent(remote.agent).addresses)
        try:
            tools = fetch_remote_tools(address, remote.tools, security=config.security,
                                       timeout_s=remote.timeout_s,
                                       untrusted=remote.untrusted)  # fmt: skip
        except MeshError as err:
            raise ConfigError(f"{source}: {err.message}") from err
        for tool in tools:
            resources.callback(tool.close)
        add(list(tools), source)
    return [tool for tool, _ in found.values()]


def tools_of(value: Any, where: str) -> list[Tool]:
    """The tools an imported object stands for: a Tool instance, a Tool class (instantiated),
    or a module (every tool it exports)."""
    if isinstance(value, ModuleType):
        return [tool for tool, _ in _module_tools(value, where)]
    if isinstance(value, Tool):
        return [value]
    if inspect.isclass(value) and issubclass(value, Tool):
        try:
            return [value()]
        except MeshError as err:
            raise ConfigError(f"{where}: {value.__name__}() failed: {err.message}") from err
        except Exception as err:
            raise ConfigError(f"{where}: {value.__name__}() failed: {type(err).__name__}: "
                              f"{err}") from err  # fmt: skip
    kind = type(value).__name__
    hint = " (decorate it with @tool)" if inspect.isfunction(value) else ""
    raise ConfigError(f"{where}: {getattr(value, '__name__', kind)!r} is a {kind}, not a tool"
                      f"{hint}")  # fmt: skip


def _tools_from_entry(entry: str, where: str, config: MeshConfig) -> list[tuple[Tool, str]]:
    """The tools one entry stands for, each with where it came from (for clash messages)."""
    if not is_reference(entry):
        return [(BUILTIN_TOOLS[entry](), where)]
    if ":" in entry:
        return [(t, where) for t in tools_of(import_object(entry, where, config.root), where)]
    return _module_tools(import_module(entry, where, config.root), where)


def _module_tools(module: ModuleType, where: str) -> list[tuple[Tool, str]]:
    """``__all__`` when the module has one (each name must be a tool), else every tool
    defined or created in the module itself (not ones it merely imported)."""
    exported = getattr(module, "__all__", None)
    names = exported if exported is not None else [
        name for name, value in vars(module).items()
        if not name.startswith("_") and not _imported(value, module) and (
            isinstance(value, Tool) or (inspect.isclass(value) and issubclass(value, Tool)
                                        and not inspect.isabstract(value)))
    ]  # fmt: skip
    tools = [(tool, f"{where} ({name})") for name in names
             for tool in tools_of(getattr(module, name, None), f"{where} ({name})")]  # fmt: skip
    if not tools:
        raise ConfigError(f"{where}: module {module.__name__!r} exports no tool")
    return tools


def _imported(value: Any, module: ModuleType) -> bool:
    """Whether ``value`` is another module's object that ``module`` merely imported."""
    origin = sys.modules.get(getattr(value, "__module__", None) or "")
    if origin is None or origin is module:
        return False
    return inspect.isclass(value) or any(v is value for v in vars(origin).values())


def _started(client: MCPClient, where: str) -> list[Tool]:
    try:
        return client.start()
    except MeshError as err:
        raise ConfigError(f"{where}: {err.message}") from err
