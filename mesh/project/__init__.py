"""A mesh project: a ``mesh.toml`` and the ``services/`` it names, turned into agents.

The config says what each agent is; this package finds the config, imports
the project's own tools and factories, starts its MCP servers and builds the
agent a service serves. It holds no agent of its own: the seed mesh lives in
the repository's ``services/`` like any user's project.
"""

from __future__ import annotations

from pathlib import Path

from mesh.config import MeshConfig, load_config
from mesh.errors import ConfigError
from mesh.project.build import ResolvedAgent, build_agent, replays
from mesh.project.builtin_tools import BUILTIN_TOOLS

__all__ = ["BUILTIN_TOOLS", "CONFIG_NAME", "ResolvedAgent", "build_agent", "load_mesh_config",
           "replays"]  # fmt: skip

CONFIG_NAME = "mesh.toml"


def load_mesh_config(path: str | Path | None = None) -> MeshConfig:
    """The config at ``path``, else ``./mesh.toml``."""
    if path is None:
        path = Path(CONFIG_NAME)
        if not path.exists():
            raise ConfigError(
                f"no {CONFIG_NAME} in {Path.cwd()}: give --config PATH, or make a project "
                "with `mesh new DIR`"
            )
    return load_config(path, frozenset(BUILTIN_TOOLS))
