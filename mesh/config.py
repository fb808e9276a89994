"""The mesh config: which agents exist, how each is built, where each listens.

One TOML file. Every field is checked at start-up and a wrong one fails with
a message that names it (``agents.manager.kind: ...``). Addresses may be
overridden from the environment (``MESH_ADDRESS_MATH_SPECIALIST=host:port``,
comma-separated for replicas), and port 0 lets ``mesh up`` pick free ports.

    [mesh]
    entry = "manager"            # the agent `mesh run` talks to
    task = "..."                 # what `mesh run` asks when given no task
    replay = "auto"              # auto: replay cassettes when no model key is set
    replay_latency_ms = 0        # make each replayed model call take this long (benchmarks)

    [models]
    default = "openai/gpt-4o-mini"
    api_base = ""                # any OpenAI-compatible server

    [agents.math_specialist]
    kind = "code"                # or "tool-calling"
    description = "..."
    address = "127.0.0.1:50052"  # or a list of replicas
    tools = ["smallest_prime_factor", "factorial"]
    managed_agents = []
    cassette = "cassettes/math_specialist.jsonl"   # relative to this file, or "bundled:NAME"
    [agents.math_specialist.sandbox]
    wall_seconds = 20
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mesh.agents.budget import Budget
from mesh.errors import ConfigError
from mesh.paths import bundled
from mesh.rpc.security import MeshSecurity
from mesh.sandbox.config import SandboxConfig

__all__ = ["AgentConfig", "MeshConfig", "load_config"]

KINDS = ("code", "tool-calling")
REPLAY_MODES = ("auto", "always", "never")
_AGENT_KEYS = {
    "kind", "description", "address", "tools", "managed_agents", "model", "api_base",
    "cassette", "max_steps", "max_concurrent_runs", "instructions", "sandbox",
    "authorized_imports", "budget", "rate_limit_rpm", "cache", "idempotent",
}  # fmt: skip


@dataclass(frozen=True)
class AgentConfig:
    name: str
    kind: str
    description: str
    addresses: tuple[str, ...]
    tools: tuple[str, ...] = ()
    managed_agents: tuple[str, ...] = ()
    model: str = ""
    api_base: str = ""
    cassette: Path | None = None
    max_steps: int = 10
    max_concurrent_runs: int = 16
    instructions: str = ""
    authorized_imports: tuple[str, ...] = ()
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    budget: Budget | None = None
    rate_limit_rpm: int = 0
    """Model calls per minute this agent may make (0: no limit)."""
    cache: bool = False
    """Answer repeated model requests from a cache."""
    idempotent: bool = False
    """Safe to run twice: callers may retry a run whose server died mid-way."""


@dataclass(frozen=True)
class MeshConfig:
    path: Path
    agents: dict[str, AgentConfig]
    entry: str
    replay: str = "auto"
    task: str = ""
    replay_latency_ms: int = 0
    default_model: str = "openai/gpt-4o-mini"
    security: MeshSecurity | None = None
    """TLS and token settings of the whole mesh ([auth]); None: plaintext, no tokens."""
    api_base: str = ""

    def agent(self, name: str) -> AgentConfig:
        if name not in self.agents:
            raise ConfigError(
                f"no agent {name!r} in {self.path} (agents: {', '.join(self.agents)})"
            )
        return self.agents[name]

    def dependency_order(self) -> list[str]:
        """Agents ordered so that each comes after the agents it manages."""
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in path:
                raise ConfigError(f"agents.{name}.managed_agents: cycle {' -> '.join(path)}")
            if name not in order:
                for child in self.agents[name].managed_agents:
                    visit(child, (*path, name))
                order.append(name)

        for name in self.agents:
            visit(name, ())
        return order


def load_config(path: str | Path, tool_names: frozenset[str] | None = None) -> MeshConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read mesh config {path}: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    _only(data, {"mesh", "models", "agents", "auth"}, "")
    mesh = _table(data, "mesh", "")
    models = _table(data, "models", "")
    _only(mesh, {"entry", "replay", "task", "replay_latency_ms"}, "mesh")
    _only(models, {"default", "api_base"}, "models")
    agents_table = _table(data, "agents", "")
    if not agents_table:
        raise ConfigError(f"{path}: [agents] declares no agent")
    agents = {
        name: _agent(name, _table(agents_table, name, "agents"), path.parent, tool_names)
        for name in agents_table
    }
    for agent in agents.values():
        for child in agent.managed_agents:
            if child not in agents:
                raise ConfigError(f"agents.{agent.name}.managed_agents: no agent {child!r}")
    entry = _get(
        mesh, "entry", str, "mesh", "manager" if "manager" in agents else next(iter(agents))
    )
    if entry not in agents:
        raise ConfigError(f"mesh.entry: no agent {entry!r}")
    replay = _get(mesh, "replay", str, "mesh", "auto")
    if replay not in REPLAY_MODES:
        raise ConfigError(f"mesh.replay: must be one of {', '.join(REPLAY_MODES)}, got {replay!r}")
    config = MeshConfig(
        path=path,
        agents=agents,
        entry=entry,
        replay=replay,
        task=_get(mesh, "task", str, "mesh", ""),
        replay_latency_ms=_get(mesh, "replay_latency_ms", int, "mesh", 0),
        default_model=_get(models, "default", str, "models", "openai/gpt-4o-mini"),
        api_base=_get(models, "api_base", str, "models", ""),
        security=MeshSecurity.from_config(auth, path.parent)
        if (auth := _table(data, "auth", ""))
        else None,
    )
    config.dependency_order()  # rejects cycles
    return config


def _agent(
    name: str, table: dict[str, Any], base: Path, tool_names: frozenset[str] | None
) -> AgentConfig:
    where = f"agents.{name}"
    if not name.isidentifier():
        raise ConfigError(f"{where}: agent names must be Python identifiers")
    _only(table, _AGENT_KEYS, where)
    kind = _get(table, "kind", str, where)
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    tools = tuple(_get(table, "tools", list, where, []))
    unknown = [t for t in tools if tool_names is not None and t not in tool_names]
    if unknown:
        known = ", ".join(sorted(tool_names or ()))
        raise ConfigError(f"{where}.tools: unknown tool(s) {unknown}; known: {known}")
    cassette = _get(table, "cassette", str, where, "")
    return AgentConfig(
        name=name,
        kind=kind,
        description=_get(table, "description", str, where),
        addresses=_addresses(name, table.get("address"), where),
        tools=tools,
        managed_agents=tuple(_get(table, "managed_agents", list, where, [])),
        model=_get(table, "model", str, where, ""),
        api_base=_get(table, "api_base", str, where, ""),
        cassette=_cassette(cassette, base),
        max_steps=_positive(_get(table, "max_steps", int, where, 10), f"{where}.max_steps"),
        max_concurrent_runs=_positive(
            _get(table, "max_concurrent_runs", int, where, 16), f"{where}.max_concurrent_runs"
        ),
        instructions=_get(table, "instructions", str, where, ""),
        authorized_imports=tuple(_get(table, "authorized_imports", list, where, [])),
        sandbox=_sandbox(_table(table, "sandbox", where), f"{where}.sandbox"),
        budget=_budget(_table(table, "budget", where), f"{where}.budget"),
        rate_limit_rpm=_get(table, "rate_limit_rpm", int, where, 0),
        cache=_get(table, "cache", bool, where, False),
        idempotent=_get(table, "idempotent", bool, where, False),
    )


def _addresses(name: str, value: Any, where: str) -> tuple[str, ...]:
    override = os.environ.get(f"MESH_ADDRESS_{name.upper()}")
    if override:
        value = override.split(",")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ConfigError(f"{where}.address: give 'host:port' or a list of them")
    for address in value:
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{where}.address: {address!r} is not host:port")
    return tuple(a.strip() for a in value)


def _cassette(value: str, base: Path) -> Path | None:
    """A cassette path: relative to the config file, or "bundled:NAME" for one shipped here."""
    if not value:
        return None
    if value.startswith("bundled:"):
        return bundled("cassettes", value.removeprefix("bundled:"))
    return base / value


def _budget(table: dict[str, Any], where: str) -> Budget | None:
    return Budget.from_mapping(table, where) if table else None


def _sandbox(table: dict[str, Any], where: str) -> SandboxConfig:
    known = {f.name: f for f in fields(SandboxConfig)}
    _only(table, set(known), where)
    values = {}
    for key, value in table.items():
        expected = type(getattr(SandboxConfig(), key))
        if expected is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
        values[key] = value
    try:
        return SandboxConfig(**values)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err.message}") from err


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{_join(where, key)}: expected a table")
    return value


def _get(data: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in data:
        if default is ...:
            raise ConfigError(f"{_join(where, key)}: required")
        return default
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{_join(where, key)}: expected {kind.__name__}, got {value!r}")
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{_join(where, key)}: expected a list of strings")
    return value


def _positive(value: int, where: str) -> int:
    if value < 1:
        raise ConfigError(f"{where}: must be at least 1, got {value}")
    return value


def _only(data: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"{_join(where, key)}: unknown field (known: {', '.join(sorted(allowed))})"
            )


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
