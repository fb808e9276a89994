"""``ToolChange``: one entry of an agent's tool change log, as the log, the service and
its clients all read it (a module of its own: the client and the wire conversion need it
without the admin machinery, which itself calls through the client)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ToolChange"]


@dataclass(frozen=True)
class ToolChange:
    timestamp: float
    agent: str
    action: str
    """added, replaced or removed (``RUNTIME_ACTIONS``); or, recorded at start-up by
    definition_log: configured, instructions_changed, tool_configured, tool_unconfigured,
    tool_schema_changed."""
    tool: str
    caller: str
    schema_sha256: str = ""
    address: str = ""
    remote_name: str = ""
    definition: dict[str, Any] = field(default_factory=dict)
    """The remote tool's schema, so that replaying the log can rebuild it (or, for
    ``configured``, the agent's whole definition at start-up)."""
    old_sha256: str = ""
    diff: str = ""
