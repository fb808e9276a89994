"""``MCPServerParameters``: how to reach one MCP server, checked when built.

A server is either a command smolmesh starts and speaks to over stdio, or a
URL it reaches over streamable HTTP; exactly one of the two. Every check lives
here, in ``__post_init__``, so that parameters built in code and parameters
read from ``mesh.toml`` (``mesh.mcp.config``) are refused for the same reasons;
``ParameterError`` carries the field so the config reader can name it in its
own terms (``agents.manager.mcp[0].command: ...``).

The server's environment is deliberately small: a few harmless variables of
this process (the mcp SDK's default set plus locale, time zone and temp
directory), the literal ``env`` values, and the variables named in
``pass_env``. Nothing else leaks: a service's ``MESH_TOKEN`` or model API keys
never reach a third-party server unless someone named them. A ``pass_env``
name this process does not have fails the start, rather than leaving the
server to fail later, less clearly, without its token.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mesh.errors import ConfigError

__all__ = ["MCPServerParameters", "ParameterError", "http_headers", "server_environment"]

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
HEADER_NAME_PATTERN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
MAX_TIMEOUT_S = 86_400.0
MAX_ITEMS = 256
MAX_TOOL_NAMES = 1024
MAX_VALUE_CHARS = 32_768
EXTRA_INHERITED_ENV = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


class ParameterError(ConfigError):
    """One field of MCP server parameters is wrong (``field`` names it)."""

    def __init__(self, server: str, field: str, problem: str) -> None:
        super().__init__(f"mcp server {server!r}: {field}: {problem}")
        self.field = field
        self.problem = problem


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class MCPServerParameters:
    """One MCP server: a stdio ``command`` (with ``args``) or a streamable HTTP ``url``."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    pass_env: tuple[str, ...] = ()
    cwd: Path | None = None
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    headers_from_env: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Header name -> the variable of this process's environment that holds its value (the
    way to send a token: the config names it, never holds it)."""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    startup_timeout_s: float = 30.0
    call_timeout_s: float = 60.0
    untrusted: bool = True
    """Whether the model reads its tools' results fenced as data (``Tool.untrusted``). By
    default it does: a server is another program, and what it returns is often what it
    fetched (pages, issues, mail) or what others wrote; set it false for a server whose
    results only say what it computed from its own data."""

    def __post_init__(self) -> None:
        # Normalise what a caller may reasonably pass as lists, dicts or strings,
        # so that the parameters are immutable and the checks see one shape.
        for name in ("args", "pass_env", "include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("env", "headers", "headers_from_env"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _frozen_mapping(value))
        if isinstance(self.cwd, str):
            object.__setattr__(self, "cwd", Path(self.cwd))
        self._check()

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    def _fail(self, field: str, problem: str) -> ParameterError:
        return ParameterError(self.name if isinstance(self.name, str) else "?", field, problem)

    def _check(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise self._fail("name", "expected a name of letters, digits, '_' or '-' "
                             "(starting with a letter, at most 64 characters)")  # fmt: skip
        if bool(self.command) == bool(self.url):
            raise self._fail("command", "give exactly one of command (stdio) or url (HTTP)")
        self._check_strings("command", (self.command,), MAX_VALUE_CHARS)
        self._check_strings("args", self.args, MAX_VALUE_CHARS)
        self._check_strings("url", (self.url,), 2048)
        self._check_names("pass_env", self.pass_env, ENV_NAME_PATTERN)
        self._check_names("include", self.include, None)
        self._check_names("exclude", self.exclude, None)
        self._check_mapping("env", self.env, ENV_NAME_PATTERN)
        self._check_mapping("headers", self.headers, HEADER_NAME_PATTERN)
        self._check_mapping("headers_from_env", self.headers_from_env, HEADER_NAME_PATTERN)
        for header, variable in self.headers_from_env.items():
            if not ENV_NAME_PATTERN.fullmatch(variable):
                raise self._fail(f"headers_from_env.{header}", f"{variable[:128]!r} is not an "
                                 "environment variable's name")  # fmt: skip
        if both := sorted(set(self.include) & set(self.exclude)):
            raise self._fail("exclude", f"{', '.join(both)} also in include")
        if self.cwd is not None and not isinstance(self.cwd, Path):
            raise self._fail("cwd", "expected a path")
        if self.url:
            if not re.match(r"https?://[^/\s]+", self.url):
                raise self._fail("url", "expected an http:// or https:// URL")
            for name in ("args", "env", "pass_env", "cwd"):
                if getattr(self, name):
                    raise self._fail(name, "only for a server started with command")
        elif self.headers or self.headers_from_env:
            field = "headers" if self.headers else "headers_from_env"
            raise self._fail(field, "only for a server reached by url")
        if not isinstance(self.untrusted, bool):
            raise self._fail("untrusted", "expected true or false")
        for name in ("startup_timeout_s", "call_timeout_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 < value <= MAX_TIMEOUT_S
            ):
                raise self._fail(name, f"expected a number of seconds above 0, at most "
                                 f"{MAX_TIMEOUT_S:g}")  # fmt: skip

    def _check_strings(self, field: str, values: Any, limit: int) -> None:
        if not isinstance(values, tuple) or len(values) > MAX_ITEMS:
            raise self._fail(field, f"expected a list of at most {MAX_ITEMS} strings")
        for value in values:
            if not isinstance(value, str):
                raise self._fail(field, "expected a string")
            if len(value) > limit or "\x00" in value:
                raise self._fail(field, f"a string of at most {limit} characters, without NUL")

    def _check_names(self, field: str, values: Any, pattern: re.Pattern[str] | None) -> None:
        if not isinstance(values, tuple) or len(values) > MAX_TOOL_NAMES:
            raise self._fail(field, f"expected a list of at most {MAX_TOOL_NAMES} names")
        for value in values:
            if not isinstance(value, str) or not value or len(value) > 128:
                raise self._fail(field, "expected names of 1 to 128 characters")
            if pattern is not None and not pattern.fullmatch(value):
                raise self._fail(field, f"{value[:128]!r} is not a valid name")

    def _check_mapping(self, field: str, value: Any, pattern: re.Pattern[str]) -> None:
        if not isinstance(value, Mapping) or len(value) > MAX_ITEMS:
            raise self._fail(field, f"expected a table of at most {MAX_ITEMS} string values")
        for key, item in value.items():
            if not isinstance(key, str) or not pattern.fullmatch(key):
                raise self._fail(field, f"{str(key)[:128]!r} is not a valid name")
            if not isinstance(item, str) or len(item) > MAX_VALUE_CHARS or "\x00" in item:
                raise self._fail(f"{field}.{key}", f"expected a string of at most "
                                 f"{MAX_VALUE_CHARS} characters")  # fmt: skip


def http_headers(params: MCPServerParameters) -> dict[str, str]:
    """The headers sent to an HTTP server: ``headers``, then ``headers_from_env`` read now."""
    missing = [v for v in params.headers_from_env.values() if v not in os.environ]
    if missing:
        raise ConfigError(
            f"mcp server {params.name}: headers_from_env names {', '.join(missing)}, "
            "which this process's environment does not have"
        )
    return {**params.headers, **{h: os.environ[v] for h, v in params.headers_from_env.items()}}


def server_environment(params: MCPServerParameters) -> dict[str, str]:
    """The whole environment of a stdio server (see the module docstring)."""
    from mcp.client.stdio import get_default_environment  # the SDK is imported when used

    env = get_default_environment()
    for name in EXTRA_INHERITED_ENV:
        if (value := os.environ.get(name)) is not None:
            env[name] = value
    missing = [name for name in params.pass_env if name not in os.environ]
    if missing:
        raise ConfigError(
            f"mcp server {params.name}: pass_env names {', '.join(missing)}, "
            "which this process's environment does not have"
        )
    env.update({name: os.environ[name] for name in params.pass_env})
    env.update(params.env)
    return env
