"""Changing an agent's tools at run time, with an append-only change log.

Every change (a remote tool added or replaced, a tool removed) is appended to
the agent's log, one JSON line synced to disk, *before* it takes effect, with who
made it and the schema's SHA-256. The log is also what makes the changes
durable: a restarted service replays it over its configured tools, so a tool
an admin added is still there, and one removed is still gone.

Runs in flight see a change at their next step (``agent.tools`` is read once
per step).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mesh.agents.base import MultiStepAgent
from mesh.append_only import append_lines, read_records
from mesh.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, ToolDefinitionError
from mesh.paths import data_path
from mesh.rpc.remote_tool import RemoteTool
from mesh.rpc.security import MeshSecurity
from mesh.rpc.tool_change import ToolChange
from mesh.tools.final_answer import FINAL_ANSWER

__all__ = ["ToolAdmin", "ToolChange", "ToolChangeLog", "default_tool_log_dir", "schema_sha256"]

MAX_ADDRESS_CHARS = 512
RUNTIME_ACTIONS = frozenset({"added", "replaced", "removed"})
"""Changes an admin made while the service ran: what a restart replays."""


def default_tool_log_dir() -> Path:
    return data_path("MESH_TOOL_LOG_DIR", "tool-changes")


def schema_sha256(definition: Mapping[str, Any]) -> str:
    """A hash of what the model sees of a tool: equal schemas, equal hashes."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ToolChangeLog:
    """Append-only JSON lines, one file per agent, each change on disk before it applies."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, change: ToolChange) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_lines(self.path, [json.dumps(asdict(change), ensure_ascii=False) + "\n"], sync=True)

    def read(self) -> list[ToolChange]:
        changes = []
        for record in read_records(self.path):
            try:
                changes.append(ToolChange(**record))
            except TypeError:
                continue  # not a change: a line torn by a crash that still parsed
        return changes


class ToolAdmin:
    """The tool changes of one served agent (see the module docstring)."""

    def __init__(
        self, agent: MultiStepAgent, log: ToolChangeLog, security: MeshSecurity | None = None
    ) -> None:
        self.agent = agent
        self.log = log
        self.security = security
        self._lock = threading.Lock()

    def restore(self) -> int:
        """Replay the log over the configured tools; returns the number of changes replayed."""
        changes = [c for c in self.log.read() if c.action in RUNTIME_ACTIONS]
        for change in changes:
            if change.action == "removed":
                self.agent.tools.pop(change.tool, None)
            else:
                self.agent.tools[change.tool] = self._remote_tool(
                    change.definition, change.address, change.remote_name
                )
        return len(changes)

    def add(
        self,
        definition: Mapping[str, Any],
        address: str,
        *,
        caller: str,
        remote_name: str = "",
        replace: bool = False,
    ) -> ToolChange:
        tool = self._remote_tool(definition, address, remote_name)
        with self._lock:
            exists = tool.name in self.agent.tools
            if tool.name == FINAL_ANSWER or (exists and not replace):
                tool.close()
                if tool.name == FINAL_ANSWER:
                    raise InvalidRequestError(f"{FINAL_ANSWER} is built in and cannot be replaced")
                raise AlreadyExistsError(
                    f"{self.agent.name} already has a tool {tool.name!r}; set replace to swap it"
                )
            clean = tool.definition()
            change = ToolChange(
                timestamp=time.time(), agent=self.agent.name,
                action="replaced" if exists else "added", tool=tool.name, caller=caller,
                schema_sha256=schema_sha256(clean), address=address,
                remote_name=tool.remote_name, definition=clean,
            )  # fmt: skip
            self.log.append(change)
            self.agent.tools[tool.name] = tool
        return change

    def remove(self, name: str, *, caller: str) -> ToolChange:
        with self._lock:
            if name == FINAL_ANSWER or name not in self.agent.tools:
                raise NotFoundError(f"{self.agent.name} has no removable tool {name!r}")
            change = ToolChange(
                timestamp=time.time(), agent=self.agent.name, action="removed", tool=name,
                caller=caller,
            )  # fmt: skip
            self.log.append(change)
            del self.agent.tools[name]
        return change

    def history(self) -> list[ToolChange]:
        return self.log.read()

    def _remote_tool(
        self, definition: Mapping[str, Any], address: str, remote_name: str
    ) -> RemoteTool:
        if not address.strip() or len(address) > MAX_ADDRESS_CHARS or ":" not in address:
            raise InvalidRequestError(f"address must be host:port, got {address[:80]!r}")
        if remote_name and not remote_name.isidentifier():
            raise InvalidRequestError(f"remote_name {remote_name[:80]!r} is not an identifier")
        try:
            return RemoteTool(
                definition, address, remote_name=remote_name or None, security=self.security
            )
        except (ToolDefinitionError, KeyError, TypeError, ValueError) as err:
            detail = err.message if isinstance(err, ToolDefinitionError) else repr(err)
            raise InvalidRequestError(f"invalid tool spec: {detail}") from err
