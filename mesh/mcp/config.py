"""Reading ``[[agents.NAME.mcp]]`` from ``mesh.toml`` into ``MCPServerParameters``.

    [[agents.manager.mcp]]
    name = "files"                       # required: names the server in logs and errors
    command = "npx"                      # stdio: the command and its args ...
    args = ["-y", "@modelcontextprotocol/server-filesystem", "."]
    cwd = "data"                         # relative to the config file's directory (default)
    env = { LOG_LEVEL = "warn" }         # literal values for the server
    pass_env = ["GITHUB_TOKEN"]          # copied from the service's environment
    # url = "https://mcp.example.com/mcp" # ... or streamable HTTP, with
    # headers_from_env = { Authorization = "MCP_AUTH" }  # value from the service's environment
    include = ["read_file"]              # only these tools, by the server's names (or exclude)
    startup_timeout_s = 30
    call_timeout_s = 60
    untrusted = false                    # trust its results (default true: the model
                                         # reads them fenced, as data)

Types are checked here, field by field, so an error names the field the way
the file spells it; the rules beyond types (exactly one of command and url,
sizes, timeouts) are ``MCPServerParameters``'s own, re-labelled with the same
path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mesh.config_fields import only
from mesh.errors import ConfigError
from mesh.mcp.params import MAX_ITEMS, MCPServerParameters, ParameterError
from mesh.text import clip

__all__ = ["mcp_servers_from_config"]

MAX_SERVERS = 32
_STRINGS = ("name", "command", "cwd", "url")
_LISTS = ("args", "pass_env", "include", "exclude")
_TABLES = ("env", "headers", "headers_from_env")
_NUMBERS = ("startup_timeout_s", "call_timeout_s")
_BOOLEANS = ("untrusted",)
MCP_KEYS = {*_STRINGS, *_LISTS, *_TABLES, *_NUMBERS, *_BOOLEANS}


def mcp_servers_from_config(value: Any, where: str, base: Path) -> tuple[MCPServerParameters, ...]:
    """The servers of one agent's ``mcp`` array of tables; ``base`` anchors relative ``cwd``."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{where}: expected an array of tables ([[{where}]])")
    if len(value) > MAX_SERVERS:
        raise ConfigError(f"{where}: at most {MAX_SERVERS} servers, got {len(value)}")
    servers: list[MCPServerParameters] = []
    for index, table in enumerate(value):
        at = f"{where}[{index}]"
        params = _server(table, at, base)
        for other, seen in enumerate(servers):
            if seen.name == params.name:
                raise ConfigError(
                    f"{at}.name: {params.name!r} is already the name of {where}[{other}]"
                )
        servers.append(params)
    return tuple(servers)


def _server(table: dict[str, Any], at: str, base: Path) -> MCPServerParameters:
    only(table, MCP_KEYS, at)
    if "name" not in table:
        raise ConfigError(f"{at}.name: required (it names the server in logs and errors)")
    fields: dict[str, Any] = {}
    for key in _STRINGS:
        if key in table:
            fields[key] = _string(table[key], f"{at}.{key}")
    for key in _LISTS:
        if key in table:
            fields[key] = _strings(table[key], f"{at}.{key}")
    for key in _TABLES:
        if key in table:
            fields[key] = _string_table(table[key], f"{at}.{key}")
    for key in _NUMBERS:
        if key in table:
            fields[key] = _number(table[key], f"{at}.{key}")
    for key in _BOOLEANS:
        if key in table:
            fields[key] = _boolean(table[key], f"{at}.{key}")
    if "command" in fields:  # a started server runs in the project, wherever mesh runs from
        cwd = Path(fields.get("cwd", "."))
        fields["cwd"] = cwd if cwd.is_absolute() else base / cwd
    try:
        return MCPServerParameters(**fields)
    except ParameterError as err:
        raise ConfigError(f"{at}.{err.field}: {err.problem}") from None


def _string(value: Any, at: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{at}: expected a string, got {_shown(value)}")
    return value


def _strings(value: Any, at: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 4 * MAX_ITEMS:
        raise ConfigError(f"{at}: expected an array of strings, got {_shown(value)}")
    for index, item in enumerate(value):
        _string(item, f"{at}[{index}]")
    return tuple(value)


def _string_table(value: Any, at: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or len(value) > MAX_ITEMS:
        raise ConfigError(f"{at}: expected a table of strings, got {_shown(value)}")
    for key, item in value.items():
        _string(item, f"{at}.{clip(str(key), 60)}")
    return dict(value)


def _number(value: Any, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{at}: expected a number of seconds, got {_shown(value)}")
    return float(value)


def _boolean(value: Any, at: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{at}: expected true or false, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """The value's type and a few characters of it: never the whole of a long input."""
    return f"{type(value).__name__} {clip(repr(value), 40)}"
