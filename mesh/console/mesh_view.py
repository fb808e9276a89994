"""The console's view of the mesh: one ``AgentClient`` per agent, and what the pages ask of them.

The clients use the mesh's own TLS and token (``MeshConfig.security``), as the
``mesh`` command's do, and are shared by every request (a gRPC channel is
thread-safe). Every call here blocks: the app runs them in threads, several
agents at once, each with a short timeout, so one agent that does not answer
makes its row say so rather than the page hang.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mesh.config import MeshConfig
from mesh.errors import MeshError, NotFoundError
from mesh.host.run_record import RunFilter, RunRecord, RunStatus
from mesh.rpc.client import AgentClient, EventStream
from mesh.text import clip

__all__ = ["CALL_TIMEOUT_S", "LOOK_TIMEOUT_S", "MeshView"]

LOOK_TIMEOUT_S = 3.0
"""A look at an agent (health, card, runs in flight): a page waits for it."""
CALL_TIMEOUT_S = 10.0
"""A call that does something (start, cancel, get a run)."""
MAX_IN_FLIGHT_PAGES = 10
"""In-flight runs are counted from at most this many pages of ListRuns (100 each)."""
LISTING_PAGE = 100
IN_FLIGHT = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


class MeshView:
    """The agents of ``config``, at ``addresses`` where given (``mesh up`` knows the ports
    it started them on), else at the config's."""

    def __init__(
        self, config: MeshConfig, addresses: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.config = config
        self.agents = config.dependency_order()
        self.addresses = {name: list((addresses or {}).get(name) or config.agent(name).addresses)
                          for name in self.agents}  # fmt: skip
        self._clients = {name: AgentClient(self.addresses[name], agent=name,
                                           security=config.security)
                         for name in self.agents}  # fmt: skip

    def client(self, agent: str) -> AgentClient:
        client = self._clients.get(agent)
        if client is None:
            raise NotFoundError(f"no agent {clip(agent, 80)!r} in this mesh "
                                f"(agents: {', '.join(self.agents)})")  # fmt: skip
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    # Agents ---------------------------------------------------------------------------

    def agent_summary(self, name: str) -> dict[str, Any]:
        """An agent's card, health and runs in flight; what the config says of it when the
        agent cannot be reached (``healthy`` false, ``error`` why)."""
        configured = self.config.agent(name)
        summary: dict[str, Any] = {
            "name": name, "addresses": self.addresses[name],
            "replicas": len(self.addresses[name]), "healthy": False,
            "kind": configured.kind, "model": configured.model or self.config.default_model,
            "description": configured.description, "version": "", "tools": [],
            "managed_agents": list(configured.managed_agents), "in_flight": 0, "error": None,
        }  # fmt: skip
        client = self._clients[name]
        try:
            summary["healthy"] = client.health(timeout_s=LOOK_TIMEOUT_S)
            if not summary["healthy"]:
                summary["error"] = f"{client.who} answers but is not serving"
                return summary
            card = client.describe(timeout_s=LOOK_TIMEOUT_S)
            summary.update(kind=card.kind or configured.kind, model=card.model_id,
                           description=card.description, version=card.version,
                           tools=list(card.tools),
                           managed_agents=list(card.managed_agents))  # fmt: skip
            summary["in_flight"] = self._in_flight(client)
        except MeshError as err:
            summary["error"] = clip(err.message, 500)
        return summary

    def _in_flight(self, client: AgentClient) -> int:
        count, token = 0, ""
        for _ in range(MAX_IN_FLIGHT_PAGES):
            page, token = client.list_runs(RunFilter(statuses=IN_FLIGHT), page_size=LISTING_PAGE,
                                           page_token=token, timeout_s=LOOK_TIMEOUT_S)  # fmt: skip
            count += len(page)
            if not token:
                break
        return count

    # Runs -----------------------------------------------------------------------------

    def runs(self, agent: str, where: RunFilter, limit: int) -> list[RunRecord]:
        """The agent's newest runs that match ``where``, at most ``limit``."""
        client = self.client(agent)
        found: list[RunRecord] = []
        token = ""
        while len(found) < limit:
            page, token = client.list_runs(where, page_size=min(limit - len(found), LISTING_PAGE),
                                           page_token=token, timeout_s=LOOK_TIMEOUT_S)  # fmt: skip
            found += page
            if not token:
                break
        return found[:limit]

    def get_run(self, agent: str, run_id: str) -> RunRecord:
        return self.client(agent).get_run(run_id, timeout_s=CALL_TIMEOUT_S)

    def start_run(self, agent: str, task: str, session_id: str) -> RunRecord:
        record, _ = self.client(agent).start_run(task, session_id=session_id,
                                                 timeout_s=CALL_TIMEOUT_S)  # fmt: skip
        return record

    def cancel(self, agent: str, run_id: str) -> tuple[bool, RunStatus | None]:
        """Cancel a run and, the service cascading it, every run it delegated."""
        return self.client(agent).cancel(run_id, timeout_s=CALL_TIMEOUT_S)

    def watch(self, agent: str, run_id: str, start_index: int) -> EventStream:
        """The run's events from ``start_index``, kept then live, until it ends (those of
        the runs beneath it too, relayed with their depth)."""
        return self.client(agent).watch_run(run_id, start_index)
