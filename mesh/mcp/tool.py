"""``MCPTool``: one tool of an MCP server, used like any smolmesh tool.

Its inputs come from the tool's JSON Schema (``mesh.mcp.schema``), so agents,
prompts and the one validation path of ``Tool.call`` treat it like a local
tool. On top of that path, every call is checked against the server's own
schema, so a bad call is refused here with a message the model can act on and
never reaches the server. Arguments the caller did not give are not sent:
the server applies its own defaults.

Server tool names may hold ``-`` or ``.``; an agent calls tools by Python
identifier, so those become ``_`` (``read-file`` is ``read_file`` here and
``read-file`` on the wire). A name that still is no identifier, or two names
that become one, are refused at start.

Its results are untrusted unless the server's parameters say otherwise
(``MCPServerParameters.untrusted``): the model reads them fenced, as data.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mesh.errors import ConfigError, ToolArgumentError, ToolDefinitionError
from mesh.mcp.schema import InputSchema, convert_input_schema
from mesh.text import clip
from mesh.tools.base import Tool

if TYPE_CHECKING:
    import mcp_types as types

    from mesh.mcp.client import MCPClient

__all__ = ["MCPTool", "build_tools"]

log = logging.getLogger("mesh.mcp")

MAX_DESCRIPTION_CHARS = 8_000
MAX_ARGUMENTS_CHARS = 1_000_000


class MCPTool(Tool):
    """One tool of an MCP server; calls go through its ``MCPClient``."""

    def __init__(
        self, client: MCPClient, remote: types.Tool, name: str, schema: InputSchema
    ) -> None:
        self.client = client
        self.server = client.params.name
        self.remote_name = remote.name
        self.name = name
        description = (remote.description or remote.title or "").strip()
        self.description = clip(description, MAX_DESCRIPTION_CHARS) or (
            f"Tool {remote.name} of MCP server {self.server} (the server gives no description)."
        )
        self.inputs = {spec.name: spec.to_dict() for spec in schema.specs}
        self.output_type = "object" if remote.output_schema is not None else "string"
        self.structured = remote.output_schema is not None
        self.schema = schema
        super().__init__(untrusted=client.params.untrusted)

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The typed checks every tool has, then the server's schema; returns what to send."""
        checked = super().validate(arguments)
        by_name = {spec.name: spec for spec in self.input_specs}
        outgoing = {
            name: value
            for name, value in checked.items()
            if name in arguments
            # An optional input that cannot be null is "not given" when it is null.
            and not (value is None and not by_name[name].required and not by_name[name].nullable)
        }
        self.schema.check(self.name, outgoing)
        size = len(json.dumps(outgoing, default=str))
        if size > MAX_ARGUMENTS_CHARS:
            raise ToolArgumentError(
                f"invalid call to {self.name}: the arguments are {size} characters of JSON, "
                f"over the {MAX_ARGUMENTS_CHARS} limit"
            )
        return outgoing

    def forward(self, **arguments: Any) -> Any:
        return self.client.call(self.remote_name, arguments)

    def parameters_schema(self) -> dict[str, Any]:
        """The server's own schema (local $refs inlined), so the model loses nothing."""
        return self.schema.model_schema


def local_name(remote: str) -> str:
    return re.sub(r"[-.]", "_", remote)


def build_tools(client: MCPClient, listed: Sequence[types.Tool]) -> list[MCPTool]:
    """The server's tools, chosen by include/exclude, converted; ConfigError names what
    cannot be."""
    params = client.params
    server = f"mcp server {params.name}"
    by_name: dict[str, types.Tool] = {}
    for remote in listed:
        if remote.name in by_name:
            raise ConfigError(f"{server}: lists tool {clip(remote.name, 80)!r} twice")
        by_name[remote.name] = remote
    offered = clip(", ".join(sorted(by_name)) or "none", 500)
    if missing := [name for name in params.include if name not in by_name]:
        raise ConfigError(f"{server}: include names {', '.join(missing)}, which it does not "
                          f"offer (it offers: {offered})")  # fmt: skip
    if unknown := [name for name in params.exclude if name not in by_name]:
        log.warning("%s: exclude names %s, which it does not offer", server, ", ".join(unknown))
    tools: list[MCPTool] = []
    seen: dict[str, str] = {}
    for remote in listed:
        if (params.include and remote.name not in params.include) or remote.name in params.exclude:
            continue
        where = f"{server}: tool {clip(remote.name, 80)}"
        name = local_name(remote.name)
        if not name.isidentifier():
            raise ConfigError(f"{where}: the name cannot become a Python identifier; "
                              "exclude the tool to start without it")  # fmt: skip
        if name in seen:
            raise ConfigError(f"{server}: tools {seen[name]!r} and {remote.name!r} would both "
                              f"be called {name!r}; exclude one of them")  # fmt: skip
        seen[name] = remote.name
        try:
            schema = convert_input_schema(remote.input_schema, where)
            tools.append(MCPTool(client, remote, name, schema))
        except (ConfigError, ToolDefinitionError) as err:
            message = err.message if isinstance(err, ConfigError) else f"{where}: {err.message}"
            raise ConfigError(f"{message}; exclude the tool to start without it") from None
    return tools
