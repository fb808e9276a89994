"""The mesh's services: how each agent of a mesh config is built.

The config says what an agent is (kind, tools, managed agents, model,
limits); a module of this package named after the agent may add its
instructions (``INSTRUCTIONS``). Managed agents are always remote: each one
is its own service, reached over gRPC.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh.agents import CodeAgent, ToolCallingAgent
from mesh.agents.base import MultiStepAgent
from mesh.config import AgentConfig, MeshConfig, load_config
from mesh.errors import ConfigError
from mesh.models import LiteLLMModel, Model, ReplayModel
from mesh.models.litellm_model import has_provider_key
from mesh.models.wrappers import CachingModel, RateLimitedModel
from mesh.paths import bundled
from mesh.rpc.remote import RemoteAgent
from mesh.tools import (
    CorpusBackend,
    DuckDuckGoTool,
    MemoTool,
    PrimeTool,
    Tool,
    celsius_to_fahrenheit,
    factorial,
)

__all__ = ["TOOLS", "build_agent", "bundled_config_path", "load_mesh_config", "replays"]

SEARCH_CORPUS = "search_corpus.jsonl"

TOOLS: dict[str, Callable[[bool], Tool]] = {
    "celsius_to_fahrenheit": lambda replay: celsius_to_fahrenheit,
    "factorial": lambda replay: factorial,
    "smallest_prime_factor": lambda replay: PrimeTool(),
    "memo": lambda replay: MemoTool(),
    "web_search": lambda replay: DuckDuckGoTool(
        backend=CorpusBackend(bundled(SEARCH_CORPUS)) if replay else None
    ),
}
"""Tools a config may name; each factory learns whether the mesh replays."""


def bundled_config_path() -> Path:
    return bundled("mesh.toml")


def load_mesh_config(path: str | Path | None = None) -> MeshConfig:
    """The config at ``path``, else ./mesh.toml, else the bundled seed mesh."""
    if path is None:
        path = Path("mesh.toml") if Path("mesh.toml").exists() else bundled_config_path()
    return load_config(path, frozenset(TOOLS))


def replays(config: MeshConfig, agent: AgentConfig) -> bool:
    """Whether ``agent`` answers from its cassette rather than a live model."""
    if config.replay == "always":
        return True
    if config.replay == "never" or agent.cassette is None:
        return False
    model_id = agent.model or config.default_model
    return not (agent.api_base or config.api_base or has_provider_key(model_id))


def build_agent(config: MeshConfig, name: str) -> MultiStepAgent:
    agent = config.agent(name)
    replay = replays(config, agent)
    tools = [TOOLS[tool](replay) for tool in agent.tools]
    managed = [_remote(config, child) for child in agent.managed_agents]
    common: dict[str, Any] = {
        "managed_agents": managed,
        "max_steps": agent.max_steps,
        "name": name,
        "description": agent.description,
        "instructions": agent.instructions or _instructions(name),
        "budget": agent.budget,
    }
    model = _model(config, agent, replay)
    if agent.rate_limit_rpm:
        model = RateLimitedModel(model, agent.rate_limit_rpm)
    if agent.cache:
        model = CachingModel(model)  # outermost: a cache hit spends no rate-limit slot
    if agent.kind == "code":
        return CodeAgent(
            tools,
            model,
            sandbox=agent.sandbox,
            additional_authorized_imports=agent.authorized_imports,
            **common,
        )
    return ToolCallingAgent(tools, model, **common)


def _remote(config: MeshConfig, name: str) -> RemoteAgent:
    child = config.agent(name)
    return RemoteAgent(name, child.addresses, child.description, idempotent=child.idempotent,
                       security=config.security)  # fmt: skip


def _model(config: MeshConfig, agent: AgentConfig, replay: bool) -> Model:
    if replay:
        if agent.cassette is None:
            raise ConfigError(f"agents.{agent.name}.cassette: needed to replay")
        return ReplayModel(
            agent.cassette,
            model_id=f"replay:{agent.cassette.name}",
            latency_s=config.replay_latency_ms / 1000,
        )
    return LiteLLMModel(
        agent.model or config.default_model, api_base=agent.api_base or config.api_base or None
    )


def _instructions(name: str) -> str | None:
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        return None
    return getattr(module, "INSTRUCTIONS", None)
