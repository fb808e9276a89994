"""The mesh config: which agents exist, how each is built, where each listens.

One TOML file. Every field is checked at start-up and a wrong one fails with
a message that names it (``agents.manager.kind: ...``). Addresses may be
overridden from the environment (``MESH_ADDRESS_MATH_SPECIALIST=host:port``,
comma-separated for replicas), and port 0 lets ``mesh up`` pick free ports;
``MESH_MODEL`` and ``MESH_API_BASE`` override ``[models]``, ``MESH_DATA_LIMIT_MB``
overrides ``data_limit_mb``.

    [mesh]
    entry = "manager"            # the agent `mesh run` talks to
    task = "..."                 # what `mesh run` asks when given no task
    replay = "auto"              # auto: replay cassettes when no model key is set
    replay_latency_ms = 0        # make each replayed model call take this long (benchmarks)
    data_limit_mb = 50           # what each service keeps on disk (audit, traces, runs, sessions)
    run_retention_hours = 24     # how long a finished run stays findable (GetRun, WatchRun)
    run_memory_mb = 64           # and within how much memory (the oldest runs go first)

    [models]
    default = "openai/gpt-4o-mini"
    api_base = ""                # any OpenAI-compatible server

    [agents.math_specialist]
    kind = "code"                # or "tool-calling"
    description = "..."
    address = "127.0.0.1:50052"  # or a list of replicas
    tools = ["factorial", "services.math_specialist.tools:gcd", "services.math_specialist.tools"]
    instructions_file = "services/math_specialist/instructions.md"   # or instructions = "..."
    cassette = "services/math_specialist/cassette.jsonl"
    [agents.math_specialist.model_params]
    temperature = 0.2
    [[agents.math_specialist.mcp]]       # an MCP server as a tool source
    command = "python"
    args = ["-m", "my_mcp_server"]
    [[agents.math_specialist.remote_tools]]   # tools another gRPC service runs
    agent = "research_specialist"             # or address = "host:port"
    tools = ["memo"]
    [[agents.math_specialist.a2a_agents]]     # an agent of any framework, over A2A
    card_url = "http://127.0.0.1:9999"        # its agent card (or the base URL of it)

Paths are relative to this file's directory, which is also put on the
import path: a project's ``services/`` package is importable wherever the
project lives. ``docs/config.md`` describes every field.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from keyword import iskeyword
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mesh import untrusted_json
from mesh.agents.answer_schema import AnswerSchema
from mesh.agents.budget import Budget
from mesh.config_fields import get, join, only, positive, table
from mesh.data_limit import DEFAULT_DATA_LIMIT_MB, DataLimit
from mesh.errors import ConfigError
from mesh.mcp import MCPServerParameters, mcp_servers_from_config
from mesh.references import check_reference, is_reference
from mesh.rpc.a2a.options import A2AOptions
from mesh.rpc.security import MeshSecurity
from mesh.sandbox.config import SandboxConfig
from mesh.state.setting import resolve_state
from mesh.text import clip

__all__ = [
    "A2AAgentConfig",
    "AgentConfig",
    "MeshConfig",
    "RemoteToolsConfig",
    "load_config",
]

KINDS = ("code", "tool-calling")
REPLAY_MODES = ("auto", "always", "never")
MAX_INSTRUCTIONS_CHARS = 100_000
MAX_MODEL_PARAMS = 32
MESH_KEYS = {"entry", "replay", "task", "replay_latency_ms", "data_limit_mb", "state",
             "run_retention_hours", "run_memory_mb"}  # fmt: skip
MODELS_KEYS = {"default", "api_base", "retries", "retry_delay_s"}
AGENT_KEYS = {
    "kind", "description", "address", "tools", "managed_agents", "model", "api_base",
    "model_params", "cassette", "max_steps", "max_concurrent_runs", "instructions",
    "instructions_file", "agent", "mcp", "remote_tools", "sandbox", "authorized_imports",
    "budget", "rate_limit_rpm", "cache", "idempotent", "max_parallel", "output_schema_file",
    "planning_interval", "stream_outputs", "use_structured_outputs_internally",
    "a2a_agents", "a2a",
}  # fmt: skip
REMOTE_TOOLS_KEYS = {"agent", "address", "tools", "timeout_s", "untrusted"}
A2A_AGENT_KEYS = {"card_url", "name", "description", "timeout_s", "token_env"}
A2A_SERVE_KEYS = {"http_address", "public_url"}


@dataclass(frozen=True)
class RemoteToolsConfig:
    """Tools that another gRPC service runs (any ``CallTool`` server), declared up front."""

    agent: str = ""
    """A mesh agent of this config (its address follows it), or else ``address``."""
    address: str = ""
    tools: tuple[str, ...] = ()
    """The tools to take (default: every tool the service lists)."""
    timeout_s: float = 30.0
    untrusted: bool = True
    """Whether the model reads their results fenced as data (``Tool.untrusted``): by default
    it does, as the wire does not say which of a service's tools are untrusted there."""


@dataclass(frozen=True)
class A2AAgentConfig:
    """An agent of any framework, reached over A2A, that this agent manages
    (``[[agents.NAME.a2a_agents]]``; see ``mesh.rpc.a2a.A2AAgent``)."""

    card_url: str
    """Its agent card's URL, or its base URL (the well-known card path is added)."""
    name: str = ""
    """Its tool name ("": from its card, which is then fetched when the agent is built)."""
    description: str = ""
    """What the model reads about it ("": its card's description and skills)."""
    timeout_s: float | None = None
    """The longest a call may take (None: only the caller's deadline bounds it)."""
    token_env: str = ""
    """The environment variable holding a bearer token for it ("": none is sent)."""


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
    """The text itself, whether the config gave it inline or as ``instructions_file``."""
    model_params: dict[str, Any] = field(default_factory=dict)
    """Passed to the model on every call (temperature, max_tokens, ...)."""
    factory: str = ""
    """``module:function`` that builds the agent from its resolved parts."""
    mcp: tuple[MCPServerParameters, ...] = ()
    remote_tools: tuple[RemoteToolsConfig, ...] = ()
    authorized_imports: tuple[str, ...] = ()
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    budget: Budget | None = None
    rate_limit_rpm: int = 0
    """Model calls per minute this agent may make (0: no limit)."""
    cache: bool = False
    """Answer repeated model requests from a cache."""
    idempotent: bool = False
    """Safe to run twice: callers may retry a run whose server died mid-way."""
    max_parallel: int = 8
    """Calls one step may run at once (parallel tool calls; ``run_parallel`` in code)."""
    planning_interval: int | None = None
    """Write a plan before the first step and every this many steps; None: never."""
    stream_outputs: bool = False
    """Report the model's text as it is generated (``ModelOutputDelta`` events)."""
    use_structured_outputs_internally: bool = False
    """A code agent's model answers JSON ``{"thought", "code"}`` through a
    ``response_format``, for models that support structured outputs."""
    output_schema: dict[str, Any] | None = None
    """The JSON Schema a final answer must match (read from ``output_schema_file``)."""
    a2a_agents: tuple[A2AAgentConfig, ...] = ()
    """Agents of any framework, over A2A, that this agent manages beside ``managed_agents``."""
    a2a: A2AOptions | None = None
    """How this agent is offered over A2A; None: it is not."""

    def depends_on(self) -> tuple[str, ...]:
        """The agents this one calls: they must be up before it starts."""
        return (*self.managed_agents, *(r.agent for r in self.remote_tools if r.agent))


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
    model_retries: int = 3
    """How often a model call that failed for a passing reason (a rate limit, a 5xx) is
    retried, with exponential backoff from ``model_retry_delay_s``."""
    model_retry_delay_s: float = 1.0
    data_limit_mb: int = DEFAULT_DATA_LIMIT_MB
    """The most each service process keeps on disk: audit log, trace file, run ledger,
    sessions."""
    run_retention_hours: float = 24.0
    run_memory_mb: int = 64
    """How long, and within how much memory, finished runs stay findable."""
    state: str = ""
    """Where the services keep what their replicas share: "" for SQLite files of their
    own, or a postgresql:// DSN (``$MESH_STATE_DSN`` wins; see ``mesh.state``)."""

    @property
    def root(self) -> Path:
        """The project's directory: relative paths start here, and its packages import."""
        return self.path.parent

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
                for child in self.agents[name].depends_on():
                    visit(child, (*path, name))
                order.append(name)

        for name in self.agents:
            visit(name, ())
        return order


def load_config(path: str | Path, tool_names: frozenset[str] | None = None) -> MeshConfig:
    """Read and check a mesh config; ``tool_names``: the built-in tools a config may name."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read mesh config {path}: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    only(data, {"mesh", "models", "agents", "auth"}, "")
    mesh = table(data, "mesh", "")
    models = table(data, "models", "")
    only(mesh, MESH_KEYS, "mesh")
    only(models, MODELS_KEYS, "models")
    agents_table = table(data, "agents", "")
    if not agents_table:
        raise ConfigError(f"{path}: [agents] declares no agent")
    agents = {
        name: _agent(name, table(agents_table, name, "agents"), path.parent, tool_names)
        for name in agents_table
    }
    for agent in agents.values():
        for child in agent.managed_agents:
            if child not in agents:
                raise ConfigError(f"agents.{agent.name}.managed_agents: no agent {child!r}")
        for n, remote in enumerate(agent.remote_tools):
            if remote.agent and remote.agent not in agents:
                raise ConfigError(
                    f"agents.{agent.name}.remote_tools[{n}].agent: no agent {remote.agent!r}"
                )
    entry = get(
        mesh, "entry", str, "mesh", "manager" if "manager" in agents else next(iter(agents))
    )
    if entry not in agents:
        raise ConfigError(f"mesh.entry: no agent {entry!r}")
    replay = get(mesh, "replay", str, "mesh", "auto")
    if replay not in REPLAY_MODES:
        raise ConfigError(f"mesh.replay: must be one of {', '.join(REPLAY_MODES)}, got {replay!r}")
    data_limit_mb = get(mesh, "data_limit_mb", int, "mesh", DEFAULT_DATA_LIMIT_MB)
    positive(data_limit_mb, "mesh.data_limit_mb")
    run_retention_hours = get(mesh, "run_retention_hours", (int, float), "mesh", 24.0)
    if run_retention_hours <= 0:
        raise ConfigError(f"mesh.run_retention_hours: must be positive, got {run_retention_hours}")
    run_memory_mb = get(mesh, "run_memory_mb", int, "mesh", 64)
    positive(run_memory_mb, "mesh.run_memory_mb")
    config = MeshConfig(
        path=path,
        agents=agents,
        entry=entry,
        replay=replay,
        task=get(mesh, "task", str, "mesh", ""),
        replay_latency_ms=get(mesh, "replay_latency_ms", int, "mesh", 0),
        data_limit_mb=DataLimit.resolve(data_limit_mb).megabytes,  # $MESH_DATA_LIMIT_MB wins
        run_retention_hours=float(run_retention_hours),
        run_memory_mb=run_memory_mb,
        state=resolve_state(get(mesh, "state", str, "mesh", "")),
        default_model=os.environ.get("MESH_MODEL")
        or get(models, "default", str, "models", "openai/gpt-4o-mini"),
        api_base=os.environ.get("MESH_API_BASE") or get(models, "api_base", str, "models", ""),
        model_retries=_not_negative(get(models, "retries", int, "models", 3), "models.retries"),
        model_retry_delay_s=_not_negative(
            float(get(models, "retry_delay_s", (int, float), "models", 1.0)), "models.retry_delay_s"
        ),
        security=MeshSecurity.from_config(auth, path.parent)
        if (auth := table(data, "auth", ""))
        else None,
    )
    config.dependency_order()  # rejects cycles
    return config


def _agent(
    name: str, data: dict[str, Any], base: Path, tool_names: frozenset[str] | None
) -> AgentConfig:
    where = f"agents.{name}"
    if not name.isidentifier():
        raise ConfigError(f"{where}: agent names must be Python identifiers")
    only(data, AGENT_KEYS, where)
    kind = get(data, "kind", str, where)
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    factory = get(data, "agent", str, where, "")
    if factory:
        check_reference(factory, f"{where}.agent", callable_only=True)
    return AgentConfig(
        name=name,
        kind=kind,
        description=get(data, "description", str, where),
        addresses=_addresses(name, data.get("address"), where),
        tools=_tools(get(data, "tools", list, where, []), f"{where}.tools", tool_names),
        managed_agents=tuple(get(data, "managed_agents", list, where, [])),
        model=get(data, "model", str, where, ""),
        api_base=get(data, "api_base", str, where, ""),
        model_params=_model_params(table(data, "model_params", where), f"{where}.model_params"),
        cassette=_path(get(data, "cassette", str, where, ""), base),
        max_steps=positive(get(data, "max_steps", int, where, 10), f"{where}.max_steps"),
        max_concurrent_runs=positive(
            get(data, "max_concurrent_runs", int, where, 16), f"{where}.max_concurrent_runs"
        ),
        instructions=_instructions(data, base, where),
        factory=factory,
        mcp=mcp_servers_from_config(data.get("mcp", []), f"{where}.mcp", base),
        remote_tools=_remote_tools(data.get("remote_tools", []), f"{where}.remote_tools"),
        authorized_imports=tuple(get(data, "authorized_imports", list, where, [])),
        sandbox=_sandbox(table(data, "sandbox", where), f"{where}.sandbox"),
        budget=_budget(table(data, "budget", where), f"{where}.budget"),
        rate_limit_rpm=get(data, "rate_limit_rpm", int, where, 0),
        cache=get(data, "cache", bool, where, False),
        idempotent=get(data, "idempotent", bool, where, False),
        max_parallel=positive(get(data, "max_parallel", int, where, 8), f"{where}.max_parallel"),
        planning_interval=_planning_interval(data, where),
        stream_outputs=get(data, "stream_outputs", bool, where, False),
        use_structured_outputs_internally=_structured_outputs(data, kind, where),
        output_schema=_output_schema(
            get(data, "output_schema_file", str, where, ""), base, f"{where}.output_schema_file"
        ),
        a2a_agents=_a2a_agents(data, where),
        a2a=_a2a_serve(data, where),
    )


def _tools(entries: list[str], where: str, builtins: frozenset[str] | None) -> tuple[str, ...]:
    """Built-in tool names and import paths (``pkg.module:name`` or ``pkg.module``)."""
    for n, entry in enumerate(entries):
        if is_reference(entry):
            check_reference(entry, f"{where}[{n}]")
        elif builtins is not None and entry not in builtins:
            raise ConfigError(
                f"{where}[{n}]: unknown tool {entry[:80]!r}; built-in tools: "
                f"{', '.join(sorted(builtins))}, or give an import path like "
                "'services.my_agent.tools:my_tool'"
            )
    return tuple(entries)


def _instructions(data: dict[str, Any], base: Path, where: str) -> str:
    inline: str = get(data, "instructions", str, where, "")
    file: str = get(data, "instructions_file", str, where, "")
    if inline and file:
        raise ConfigError(f"{where}: give instructions or instructions_file, not both")
    if not file:
        return inline
    path = base / file
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}.instructions_file: cannot read {path}: {err}") from err
    if len(text) > MAX_INSTRUCTIONS_CHARS:
        raise ConfigError(f"{where}.instructions_file: over {MAX_INSTRUCTIONS_CHARS} characters")
    return text.strip()


def _planning_interval(data: dict[str, Any], where: str) -> int | None:
    interval = get(data, "planning_interval", int, where, 0)
    return positive(interval, f"{where}.planning_interval") if interval else None


def _structured_outputs(data: dict[str, Any], kind: str, where: str) -> bool:
    """Only a code agent has free text to structure: a tool-calling agent's answers are
    tool calls already, so the setting there is a mistake worth naming."""
    wanted: bool = get(data, "use_structured_outputs_internally", bool, where, False)
    if wanted and kind != "code":
        raise ConfigError(
            f'{where}.use_structured_outputs_internally: only for kind = "code" (a '
            f"{kind} agent answers with tool calls, structured already); remove it"
        )
    return wanted


def _output_schema(value: str, base: Path, where: str) -> dict[str, Any] | None:
    if not value:
        return None
    path = base / value
    try:
        text = path.read_text(encoding="utf-8")
        if len(text) > MAX_INSTRUCTIONS_CHARS:
            raise ConfigError(f"{where}: over {MAX_INSTRUCTIONS_CHARS} characters")
        data = untrusted_json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{where}: cannot read JSON from {path}: {clip(str(err), 200)}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {path} holds no JSON object")
    try:
        AnswerSchema(data)  # a schema that cannot check anything fails now, not at a run's end
    except ConfigError as err:
        raise ConfigError(f"{where}: {err.message}") from err
    return data


def _not_negative(value: float, where: str) -> Any:
    if value < 0:
        raise ConfigError(f"{where}: must be 0 or more, got {value}")
    return value


def _model_params(data: dict[str, Any], where: str) -> dict[str, Any]:
    if len(data) > MAX_MODEL_PARAMS:
        raise ConfigError(f"{where}: at most {MAX_MODEL_PARAMS} parameters")
    for key in ("model", "messages", "tools", "api_base", "api_key", "stream"):
        if key in data:
            raise ConfigError(f"{where}.{key}: set by smolmesh, not a model parameter")
    return dict(data)


def _remote_tools(value: Any, where: str) -> tuple[RemoteToolsConfig, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: expected an array of tables ([[{where}]])")
    out = []
    for n, item in enumerate(value):
        at = f"{where}[{n}]"
        only(item, REMOTE_TOOLS_KEYS, at)
        agent = get(item, "agent", str, at, "")
        address = get(item, "address", str, at, "")
        if bool(agent) == bool(address):
            raise ConfigError(f"{at}: give agent (a mesh agent) or address (host:port), one only")
        if address:
            _addresses("", address, at)
        timeout = get(item, "timeout_s", (int, float), at, 30.0)
        if timeout <= 0:
            raise ConfigError(f"{at}.timeout_s: must be positive")
        untrusted = get(item, "untrusted", bool, at, True)
        out.append(RemoteToolsConfig(agent, address, tuple(get(item, "tools", list, at, [])),
                                     float(timeout), untrusted))  # fmt: skip
    return tuple(out)


def _a2a_agents(data: dict[str, Any], where: str) -> tuple[A2AAgentConfig, ...]:
    """``[[agents.NAME.a2a_agents]]``; a name may not be another managed agent's."""
    value, where = data.get("a2a_agents", []), f"{where}.a2a_agents"
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: expected an array of tables ([[{where}]])")
    out, names = [], set(data.get("managed_agents") or ())
    for n, item in enumerate(value):
        at = f"{where}[{n}]"
        only(item, A2A_AGENT_KEYS, at)
        name = get(item, "name", str, at, "")
        if name and not (name.isascii() and name.isidentifier() and not iskeyword(name)):
            raise ConfigError(f"{at}.name: must be a Python identifier, got {clip(name, 80)!r}")
        if name in names:
            raise ConfigError(f"{at}.name: {name!r} is taken by another managed agent")
        names.add(name)
        timeout = get(item, "timeout_s", (int, float), at, None)
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"{at}.timeout_s: must be positive")
        token_env = get(item, "token_env", str, at, "")
        if token_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
            raise ConfigError(f"{at}.token_env: {clip(token_env, 80)!r} is no variable name")
        out.append(A2AAgentConfig(
            card_url=_http_url(get(item, "card_url", str, at), f"{at}.card_url"), name=name,
            description=get(item, "description", str, at, ""), token_env=token_env,
            timeout_s=None if timeout is None else float(timeout),
        ))  # fmt: skip
    return tuple(out)


def _a2a_serve(data: dict[str, Any], where: str) -> A2AOptions | None:
    """``[agents.NAME.a2a]``; None when the table is absent."""
    if "a2a" not in data:
        return None
    serve, where = table(data, "a2a", where), f"{where}.a2a"
    only(serve, A2A_SERVE_KEYS, where)
    http_address = get(serve, "http_address", str, where, "127.0.0.1:0")
    host, _, port = http_address.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{where}.http_address: {clip(http_address, 80)!r} is not host:port")
    public_url = get(serve, "public_url", str, where, "")
    if public_url:
        _grpc_address(public_url, f"{where}.public_url")
    return A2AOptions(http_address, public_url)


def _grpc_address(value: str, where: str) -> str:
    """What an A2A card may give as its gRPC interface: host:port, or a URL that says it."""
    parts = urlsplit(value if "://" in value else f"grpc://{value}")
    scheme_ok = parts.scheme in ("grpc", "grpcs", "http", "https")
    if not scheme_ok or not parts.hostname or ("://" not in value and parts.port is None):
        raise ConfigError(f"{where}: expected host:port or a grpc(s):// or http(s):// URL, "
                          f"got {clip(value, 80)!r}")  # fmt: skip
    return value


def _http_url(value: str, where: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}: expected an http(s):// URL, got {clip(value, 80)!r}")
    return value


def _addresses(name: str, value: Any, where: str) -> tuple[str, ...]:
    override = os.environ.get(f"MESH_ADDRESS_{name.upper()}") if name else None
    if override:
        value = override.split(",")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ConfigError(f"{where}.address: give 'host:port' or a list of them")
    for address in value:
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{where}.address: {address[:80]!r} is not host:port")
    return tuple(a.strip() for a in value)


def _path(value: str, base: Path) -> Path | None:
    return base / value if value else None


def _budget(data: dict[str, Any], where: str) -> Budget | None:
    return Budget.from_mapping(data, where) if data else None


def _sandbox(data: dict[str, Any], where: str) -> SandboxConfig:
    known = {f.name: f for f in fields(SandboxConfig)}
    if "pool_size" in data:
        raise ConfigError(
            f"{join(where, 'pool_size')}: jails are no longer pooled (a zygote forks each run's "
            "interpreter in about a millisecond); remove the setting"
        )
    only(data, set(known), where)
    values = {}
    for key, value in data.items():
        expected = type(getattr(SandboxConfig(), key))
        if expected is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{join(where, key)}: expected {expected.__name__}, got {value!r}")
        values[key] = value
    try:
        return SandboxConfig(**values)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err.message}") from err
