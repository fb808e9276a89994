"""Building one agent of a mesh config: its model, tools, delegates and instructions.

What the config cannot say, an agent factory can (``agent = "pkg.module:build"``):
it receives the agent's resolved parts (a ``ResolvedAgent``) and returns the
agent, usually by calling ``parts.build(...)`` with what it wants changed.
Managed agents are always remote: each one is its own service.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.agents import CodeAgent, ToolCallingAgent
from mesh.agents.base import MultiStepAgent
from mesh.config import A2AAgentConfig, AgentConfig, MeshConfig
from mesh.errors import ConfigError, MeshError
from mesh.models import LiteLLMModel, Model, ReplayModel, RetryPolicy
from mesh.models.litellm_model import has_provider_key
from mesh.models.wrappers import CachingModel, RateLimitedModel
from mesh.project.tools import resolve_tools
from mesh.references import import_object, on_import_path
from mesh.rpc.remote import RemoteAgent
from mesh.tools.base import Tool

if TYPE_CHECKING:
    from mesh.rpc.a2a.remote import A2AAgent

__all__ = ["ResolvedAgent", "build_agent", "replays"]


@dataclass
class ResolvedAgent:
    """One agent of a config with everything resolved: what an agent factory receives."""

    config: AgentConfig
    mesh: MeshConfig
    model: Model
    tools: list[Tool]
    managed_agents: list[RemoteAgent | A2AAgent]
    """The mesh agents it manages, then the A2A agents (``a2a_agents``)."""
    replay: bool
    """Whether the model answers from the agent's cassette rather than live."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def root(self) -> Path:
        """The project's directory (files a factory reads are relative to it)."""
        return self.mesh.root

    def build(self, **overrides: Any) -> MultiStepAgent:
        """The agent the config describes; ``overrides`` replace any constructor argument
        (``tools=[...]``, ``instructions=...``, ``max_steps=...``)."""
        agent = self.config
        arguments: dict[str, Any] = {
            "tools": self.tools,
            "model": self.model,
            "managed_agents": self.managed_agents,
            "max_steps": agent.max_steps,
            "name": agent.name,
            "description": agent.description,
            "instructions": agent.instructions or None,
            "budget": agent.budget,
            "output_schema": agent.output_schema,
            "max_parallel": agent.max_parallel,
            "planning_interval": agent.planning_interval,
            "stream_outputs": agent.stream_outputs,
        }
        if agent.kind == "code":
            arguments |= {"sandbox": agent.sandbox,
                          "additional_authorized_imports": agent.authorized_imports,
                          "use_structured_outputs_internally":
                              agent.use_structured_outputs_internally}  # fmt: skip
        arguments |= overrides
        kind: Callable[..., MultiStepAgent] = (
            CodeAgent if agent.kind == "code" else ToolCallingAgent
        )
        return kind(**arguments)


def replays(config: MeshConfig, agent: AgentConfig) -> bool:
    """Whether ``agent`` answers from its cassette rather than a live model."""
    if config.replay == "always":
        return True
    if config.replay == "never" or agent.cassette is None:
        return False
    model_id = agent.model or config.default_model
    return not (agent.api_base or config.api_base or has_provider_key(model_id))


def build_agent(
    config: MeshConfig,
    name: str,
    *,
    resources: ExitStack | None = None,
    wrap_model: Callable[[Model], Model] | None = None,
) -> MultiStepAgent:
    """The agent ``name`` of ``config``, ready to serve or run.

    ``resources`` closes what the agent holds (MCP servers, channels to tool
    services) when the caller is done; without it they close at exit.
    ``wrap_model`` wraps the model (``mesh record`` records through it).
    """
    if resources is None:
        resources = ExitStack()
        atexit.register(resources.close)
    agent = config.agent(name)
    on_import_path(config.root)
    replay = replays(config, agent)
    model = _model(config, agent, replay)
    if wrap_model is not None:
        model = wrap_model(model)
    parts = ResolvedAgent(
        config=agent,
        mesh=config,
        model=model,
        tools=resolve_tools(config, agent, resources),
        managed_agents=[
            *(_remote(config, child) for child in agent.managed_agents),
            *(_a2a(config, agent, n, resources) for n in range(len(agent.a2a_agents))),
        ],
        replay=replay,
    )
    if not agent.factory:
        return parts.build()
    return _from_factory(parts)


def _from_factory(parts: ResolvedAgent) -> MultiStepAgent:
    where = f"agents.{parts.name}.agent"
    factory = import_object(parts.config.factory, where, parts.root)
    if not callable(factory):
        raise ConfigError(f"{where}: {parts.config.factory!r} is not callable")
    try:
        agent = factory(parts)
    except MeshError as err:
        raise ConfigError(f"{where}: {err.message}") from err
    except Exception as err:  # the user's code: named, without a traceback
        raise ConfigError(f"{where}: {parts.config.factory} failed: {type(err).__name__}: "
                          f"{err}") from err  # fmt: skip
    expected = CodeAgent if parts.config.kind == "code" else ToolCallingAgent
    if not isinstance(agent, expected):
        raise ConfigError(f"{where}: returned {type(agent).__name__}, but kind = "
                          f"{parts.config.kind!r} needs a {expected.__name__}")  # fmt: skip
    if agent.name != parts.name:
        raise ConfigError(f"{where}: the agent is named {agent.name!r}, not {parts.name!r}")
    return agent


def _remote(config: MeshConfig, name: str) -> RemoteAgent:
    child = config.agent(name)
    return RemoteAgent(name, child.addresses, child.description, idempotent=child.idempotent,
                       security=config.security)  # fmt: skip


def _a2a(config: MeshConfig, agent: AgentConfig, n: int, resources: ExitStack) -> A2AAgent:
    """The ``n``th of ``agent.a2a_agents``: its card is fetched now unless the config names
    and describes it (then on its first call)."""
    where = f"agents.{agent.name}.a2a_agents[{n}]"
    entry: A2AAgentConfig = agent.a2a_agents[n]
    token = os.environ.get(entry.token_env, "") if entry.token_env else None
    if entry.token_env and not token:
        raise ConfigError(f"{where}.token_env: ${entry.token_env} is not set")
    from mesh.rpc.a2a.remote import A2AAgent  # the A2A SDK: loaded by meshes that use it

    try:
        remote = A2AAgent(
            entry.card_url, entry.name or None, entry.description or None,
            timeout_s=entry.timeout_s, token=token, security=config.security,
        )  # fmt: skip
    except MeshError as err:
        raise ConfigError(f"{where}: {err.message}") from err
    resources.callback(remote.close)
    return remote


def _model(config: MeshConfig, agent: AgentConfig, replay: bool) -> Model:
    model: Model
    if replay:
        if agent.cassette is None:
            raise ConfigError(f"agents.{agent.name}.cassette: needed to replay")
        model = ReplayModel(
            agent.cassette,
            model_id=f"replay:{agent.cassette.name}",
            latency_s=config.replay_latency_ms / 1000,
        )
    else:
        retry = RetryPolicy(max_retries=config.model_retries,
                            initial_delay_s=config.model_retry_delay_s)  # fmt: skip
        model = LiteLLMModel(agent.model or config.default_model,
                             api_base=agent.api_base or config.api_base or None, retry=retry,
                             **agent.model_params)  # fmt: skip
    if agent.rate_limit_rpm:
        model = RateLimitedModel(model, agent.rate_limit_rpm)
    if agent.cache:
        model = CachingModel(model)  # outermost: a cache hit spends no rate-limit slot
    return model
