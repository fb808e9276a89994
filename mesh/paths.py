"""Where smolmesh keeps its files: an environment variable, else the user's data directory."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["bundled", "data_path"]


def data_path(env_var: str, *default: str) -> Path:
    """``$env_var`` if set, else ``$XDG_DATA_HOME/smolmesh/<default...>`` (~/.local/share)."""
    if value := os.environ.get(env_var):
        return Path(value)
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home.joinpath("smolmesh", *default)


def bundled(*parts: str) -> Path:
    """A data file shipped with smolmesh (``mesh/data/...``)."""
    return Path(str(resources.files("mesh.data").joinpath(*parts)))
