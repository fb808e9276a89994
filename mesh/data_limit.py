"""What one service process may keep on disk, and how that is split.

Callers decide how much a service writes (tasks, run ids, tool arguments all
end up in its audit log, trace file, run ledger and conversations), so the
whole has one bound, set by ``[mesh] data_limit_mb`` or
``$MESH_DATA_LIMIT_MB``: two fifths for the audit log, a fifth each for the
trace file, the run ledger and the sessions (conversations).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mesh.errors import ConfigError

__all__ = ["DATA_LIMIT_ENV", "DEFAULT_DATA_LIMIT_MB", "DataLimit"]

DEFAULT_DATA_LIMIT_MB = 50
DATA_LIMIT_ENV = "MESH_DATA_LIMIT_MB"


@dataclass(frozen=True)
class DataLimit:
    """The most one service process keeps on disk, and its split."""

    megabytes: int = DEFAULT_DATA_LIMIT_MB

    def __post_init__(self) -> None:
        if self.megabytes < 1:
            raise ConfigError(f"the data limit must be at least 1 MB, got {self.megabytes}")

    @classmethod
    def resolve(cls, megabytes: int | None = None) -> DataLimit:
        """``$MESH_DATA_LIMIT_MB`` if set, else ``megabytes``, else the default."""
        if value := os.environ.get(DATA_LIMIT_ENV, "").strip():
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"{DATA_LIMIT_ENV}: expected a whole number of megabytes "
                                  f"(at least 1), got {value[:40]!r}")  # fmt: skip
            megabytes = int(value)
        return cls(DEFAULT_DATA_LIMIT_MB if megabytes is None else megabytes)

    @property
    def audit_bytes(self) -> int:
        return self.megabytes * 1024 * 1024 * 2 // 5

    @property
    def trace_bytes(self) -> int:
        return self.megabytes * 1024 * 1024 // 5

    @property
    def ledger_bytes(self) -> int:
        return self.megabytes * 1024 * 1024 // 5

    @property
    def sessions_bytes(self) -> int:
        return self.megabytes * 1024 * 1024 // 5
