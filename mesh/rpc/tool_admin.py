"""Changing an agent's tools at run time, with an append-only change log.

Every change (a remote tool added or replaced, a tool removed) is appended to
the agent's log *before* it takes effect, with who made it and the schema's
SHA-256. The log is also what makes the changes durable: a restarted service
replays it over its configured tools, so a tool an admin added is still there,
and one removed is still gone.

The log is a ``ChangeLog``: one JSON-lines file per agent, synced to disk
(``ToolChangeLog``, the default), or the shared state database
(``mesh.rpc.postgres_tool_changes``), where every replica of the agent reads
and writes the same log. There each replica also *follows* it
(``ToolAdmin.follow``): a change made on one replica is announced on the
agent's channel when it commits, and the others read what they have not yet
applied, in the log's order, and apply it.

Runs in flight see a change at their next step (``agent.tools`` is read once
per step).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from mesh.agents.base import MultiStepAgent
from mesh.append_only import append_lines, read_records
from mesh.errors import (
    AlreadyExistsError,
    InvalidRequestError,
    MeshError,
    NotFoundError,
    ToolDefinitionError,
)
from mesh.paths import data_path
from mesh.rpc.remote_tool import RemoteTool
from mesh.rpc.security import MeshSecurity
from mesh.rpc.tool_change import ToolChange
from mesh.tools.base import Tool
from mesh.tools.final_answer import FINAL_ANSWER

__all__ = ["ChangeLog", "Subscriptions", "ToolAdmin", "ToolChange", "ToolChangeLog",
           "default_tool_log_dir", "schema_sha256"]  # fmt: skip

log = logging.getLogger(__name__)

MAX_ADDRESS_CHARS = 512
RUNTIME_ACTIONS = frozenset({"added", "replaced", "removed"})
"""Changes an admin made while the service ran: what a restart replays."""
RECHECK_AFTER_FOLLOWING_S = 1.0
"""A subscription starts listening within ``Notifications.POLL_S``: one re-read this long
after ``follow`` covers a change committed in between."""
RECHECK_S = 30.0
"""A re-read this often anyway: a safety net under the notifications, one small query."""
RETRY_S = 1.0
"""While the log cannot be read (the database is away), how often a follower tries again."""


def default_tool_log_dir() -> Path:
    return data_path("MESH_TOOL_LOG_DIR", "tool-changes")


def schema_sha256(definition: Mapping[str, Any]) -> str:
    """A hash of what the model sees of a tool: equal schemas, equal hashes."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ChangeLog(Protocol):
    """Where an agent's tool changes are kept, in order: a file per agent (``ToolChangeLog``)
    or the shared database (``PostgresToolChangeLog``). A change's *position* grows with
    each append; positions need not be consecutive."""

    where: str
    """What and where the log is, for log lines."""
    channel: str
    """The notification channel on which appending a run-time change announces it to the
    agent's other replicas; "" for a log that is not shared (a file)."""

    def append(self, change: ToolChange) -> int:
        """Durably record ``change`` (before it applies); its position."""
        ...

    def read(self) -> list[ToolChange]: ...

    def read_after(self, position: int) -> list[tuple[int, ToolChange]]:
        """The changes after ``position`` (0: all), in order, with their positions."""
        ...

    def exclusive(self) -> AbstractContextManager[object]:
        """Held by one writer of the log at a time (a start-up's read, then append)."""
        ...


class Subscriptions(Protocol):
    """What following needs of ``mesh.state.notifications.Notifications``."""

    def subscribe(self, channel: str, on_message: Callable[[str], None],
                  resumed: Callable[[], None] | None = None) -> None: ...  # fmt: skip


class ToolChangeLog:
    """Append-only JSON lines, one file per agent, each change on disk before it applies.
    A change's position is its ordinal in the file (lines torn by a crash do not count)."""

    channel = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def append(self, change: ToolChange) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_lines(self.path, [json.dumps(asdict(change), ensure_ascii=False) + "\n"], sync=True)
        return len(self.read())  # exact but for a writer in another process at the same instant

    def read(self) -> list[ToolChange]:
        changes = []
        for record in read_records(self.path):
            try:
                changes.append(ToolChange(**record))
            except TypeError:
                continue  # not a change: a line torn by a crash that still parsed
        return changes

    def read_after(self, position: int) -> list[tuple[int, ToolChange]]:
        return list(enumerate(self.read(), start=1))[position:]

    def exclusive(self) -> AbstractContextManager[object]:
        return nullcontext()  # one service per file: its start-up is the only writer then


class ToolAdmin:
    """The tool changes of one served agent (see the module docstring)."""

    def __init__(
        self, agent: MultiStepAgent, log: ChangeLog, security: MeshSecurity | None = None
    ) -> None:
        self.agent = agent
        self.log = log
        self.security = security
        self._lock = threading.Lock()
        self._position = 0
        self._own: dict[int, Tool | None] = {}
        """Changes this replica appended and applied, by position, until following reads
        them: what it installed (None: removed), so they are never built or applied twice."""
        self._follower: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = threading.Event()

    @property
    def position(self) -> int:
        """The log's position up to which this agent's tools reflect it."""
        return self._position

    def restore(self) -> int:
        """Replay the log over the configured tools, remembering how far it got (following
        goes on from there); returns the number of run-time changes replayed."""
        with self._lock:
            return self._catch_up()

    def follow(self, notifications: Subscriptions) -> None:
        """From now on, apply the changes the agent's other replicas make (after ``restore``).

        The listener's thread only wakes this admin's own thread, which reads the log and
        applies what is new: reading waits on the database, and applying on the lock that
        an ``add`` holds while it writes, neither of which the listener (shared by every
        subscriber of the process) may wait for. A burst of notifications is one read."""
        if not self.log.channel:
            raise ValueError(f"the tool change log {self.log.where} is not shared: nothing "
                             "to follow")  # fmt: skip
        if self._follower is not None:
            raise RuntimeError("already following")
        self._follower = threading.Thread(target=self._follow_forever, daemon=True,
                                          name=f"tool-changes-{self.agent.name}"[:40])  # fmt: skip
        self._follower.start()
        notifications.subscribe(self.log.channel, lambda _position: self._wake.set(),
                                self._wake.set)  # fmt: skip

    def close(self) -> None:
        """Stop following (the service is shutting down)."""
        self._closed.set()
        self._wake.set()
        if self._follower is not None:
            self._follower.join(timeout=5)

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
            try:
                self._catch_up_if_following()  # another replica may have just changed it
                exists = tool.name in self.agent.tools
                if tool.name == FINAL_ANSWER:
                    raise InvalidRequestError(f"{FINAL_ANSWER} is built in and cannot be replaced")
                if exists and not replace:
                    raise AlreadyExistsError(f"{self.agent.name} already has a tool "
                                             f"{tool.name!r}; set replace to swap it")  # fmt: skip
                clean = tool.definition()
                change = ToolChange(
                    timestamp=time.time(), agent=self.agent.name,
                    action="replaced" if exists else "added", tool=tool.name, caller=caller,
                    schema_sha256=schema_sha256(clean), address=address,
                    remote_name=tool.remote_name, definition=clean,
                )  # fmt: skip
                position = self.log.append(change)
            except BaseException:
                tool.close()
                raise
            self.agent.tools[tool.name] = tool
            self._applied_own(position, tool)
        return change

    def remove(self, name: str, *, caller: str) -> ToolChange:
        with self._lock:
            self._catch_up_if_following()
            if name == FINAL_ANSWER or name not in self.agent.tools:
                raise NotFoundError(f"{self.agent.name} has no removable tool {name!r}")
            change = ToolChange(
                timestamp=time.time(), agent=self.agent.name, action="removed", tool=name,
                caller=caller,
            )  # fmt: skip
            position = self.log.append(change)
            del self.agent.tools[name]
            self._applied_own(position, None)
        return change

    def history(self) -> list[ToolChange]:
        return self.log.read()

    # -------------------------------------------------------------- following

    def _follow_forever(self) -> None:
        wait_s, failing = RECHECK_AFTER_FOLLOWING_S, False
        while True:
            self._wake.wait(wait_s)
            if self._closed.is_set():
                return
            self._wake.clear()
            try:
                with self._lock:
                    self._catch_up()
            except Exception as err:  # the database away, most often: said once, then retried
                if not failing:
                    log.warning("%s: cannot follow the tool changes in %s (%s); retrying",
                                self.agent.name, self.log.where, str(err)[:300],
                                exc_info=not isinstance(err, MeshError))  # fmt: skip
                wait_s, failing = RETRY_S, True
                continue
            if failing:
                log.info("%s: following the tool changes in %s again", self.agent.name,
                         self.log.where)  # fmt: skip
            wait_s, failing = RECHECK_S, False

    def _catch_up_if_following(self) -> None:
        if self._follower is not None:
            self._catch_up()

    def _applied_own(self, position: int, installed: Tool | None) -> None:
        if self._follower is not None:  # following will read it: recognised, not redone
            self._own[position] = installed

    def _catch_up(self) -> int:
        """Apply the log's run-time changes after the position reached (under the lock).

        Each one sets or removes one tool, so only the last change of each tool matters:
        that one alone is applied (no tool built only to be replaced), and a change this
        replica made itself is recognised by its position and not applied again."""
        last: dict[str, tuple[int, ToolChange]] = {}
        runtime = 0
        for position, change in self.log.read_after(self._position):
            if change.action in RUNTIME_ACTIONS:
                last[change.tool] = (position, change)
                runtime += 1
            self._position = max(self._position, position)
        for name, (position, change) in last.items():
            if position in self._own:
                own = self._own[position]
                if own is None:
                    self.agent.tools.pop(name, None)
                elif self.agent.tools.get(name) is not own:
                    self.agent.tools[name] = own  # another replica's earlier change came between
            else:
                self._apply(position, change)
        for position in [p for p in self._own if p <= self._position]:
            del self._own[position]
        return runtime

    def _apply(self, position: int, change: ToolChange) -> None:
        if change.action == "removed":
            self.agent.tools.pop(change.tool, None)
            return
        try:
            tool = self._remote_tool(change.definition, change.address, change.remote_name)
        except InvalidRequestError as err:
            log.warning("%s: tool change %d in %s (%s %s) cannot be applied, left out: %s",
                        self.agent.name, position, self.log.where, change.action, change.tool,
                        err.message)  # fmt: skip
            return
        self.agent.tools[change.tool] = tool

    def _remote_tool(
        self, definition: Mapping[str, Any], address: str, remote_name: str
    ) -> RemoteTool:
        if not address.strip() or len(address) > MAX_ADDRESS_CHARS or ":" not in address:
            raise InvalidRequestError(f"address must be host:port, got {address[:80]!r}")
        if remote_name and not remote_name.isidentifier():
            raise InvalidRequestError(f"remote_name {remote_name[:80]!r} is not an identifier")
        try:
            untrusted = definition.get("untrusted", True)  # unset: remote, so untrusted
            return RemoteTool(definition, address, remote_name=remote_name or None,
                              security=self.security, untrusted=untrusted is not False)  # fmt: skip
        except (ToolDefinitionError, KeyError, TypeError, ValueError) as err:
            detail = err.message if isinstance(err, ToolDefinitionError) else repr(err)
            raise InvalidRequestError(f"invalid tool spec: {detail}") from err
