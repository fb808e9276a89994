"""Where smolmesh keeps its files: an environment variable, else the user's data directory;
and, for a service about to write there, a check that it can, which names the variable."""

from __future__ import annotations

import errno
import os
from importlib import resources
from pathlib import Path

from mesh.errors import ConfigError

__all__ = ["bundled", "data_path", "writable_dir"]


def data_path(env_var: str, *default: str) -> Path:
    """``$env_var`` if set, else ``$XDG_DATA_HOME/smolmesh/<default...>`` (~/.local/share)."""
    if value := os.environ.get(env_var):
        return Path(value)
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home.joinpath("smolmesh", *default)


def writable_dir(directory: Path, what: str, env_var: str) -> Path:
    """``directory``, made if missing, for a service about to write its ``what`` there.

    One it cannot make or write is a deployment's mistake, not a bug, and is found at
    start-up: a ConfigError that names the place, the reason and ``env_var`` (which moves
    it), rather than a traceback from deep inside whatever opened the first file.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(directory))
    except OSError as err:
        reason = os.strerror(errno.ENOTDIR) if isinstance(err, FileExistsError) else err.strerror
        raise ConfigError(
            f"cannot write the {what} {directory} ({reason}); point {env_var} somewhere writable"
        ) from err
    return directory


def bundled(*parts: str) -> Path:
    """A data file shipped with smolmesh (``mesh/data/...``)."""
    return Path(str(resources.files("mesh.data").joinpath(*parts)))
