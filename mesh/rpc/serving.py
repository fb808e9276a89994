"""Serving an agent from Python: ``mesh.serve(agent, "127.0.0.1:50051")``.

The same service ``mesh serve`` runs for an agent of a config: the agent's
RPCs, health and reflection, its audit log, trace file, run ledger (run ids
as idempotency keys) and change log, in one call that returns when the
process is signalled (SIGTERM or SIGINT), after a graceful drain::

    from mesh import ToolCallingAgent, LiteLLMModel, serve, tool

    @tool
    def shout(text: str) -> str:
        \"\"\"Upper-cases text.

        Args:
            text: What to shout.
        \"\"\"
        return text.upper()

    agent = ToolCallingAgent([shout], LiteLLMModel("openai/gpt-4o-mini"), name="shouter",
                             description="Shouts.")
    serve(agent, "127.0.0.1:50051")

Callers decide how much a service writes, so what it keeps on disk has one
bound, its data limit (``[mesh] data_limit_mb``, ``$MESH_DATA_LIMIT_MB``):
two fifths for the audit log, a fifth each for the trace file, the run
ledger and the sessions (``DataLimit``). The logs' shares also hold what
earlier processes of the service left behind, so restarts do not add up.
What stays outside: the memo, shared by the agents (it has its own cap, and
refuses rather than forgets), and the change log (written by admins and at
start-up only).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

from mesh.agents.base import MultiStepAgent
from mesh.data_limit import DataLimit
from mesh.host.allocator import limit_retained_memory
from mesh.host.audit import AuditLog
from mesh.host.run_store import DEFAULT_RUN_MEMORY_BYTES, DEFAULT_RUN_RETENTION_S, RunStore
from mesh.host.served_agent import ServedAgent
from mesh.rpc.a2a.options import A2AOptions
from mesh.rpc.definition_log import record_definition
from mesh.rpc.security import MeshSecurity
from mesh.rpc.server import serve as serve_async
from mesh.rpc.servicer import ProtoCodec
from mesh.rpc.stores import Stores, open_stores
from mesh.rpc.tool_admin import ToolAdmin
from mesh.state.registry import close_state, state_notifications, use_state
from mesh.telemetry import setup_tracing

__all__ = ["serve"]

log = logging.getLogger(__name__)

FOLLOW_WAIT_S = 10.0


def serve(
    agent: MultiStepAgent,
    address: str = "127.0.0.1:50051",
    *,
    max_concurrent_runs: int = 16,
    security: MeshSecurity | None = None,
    health_address: str | None = None,
    on_ready: Callable[[int], None] | None = None,
    data_limit_mb: int | None = None,
    run_retention_s: float = DEFAULT_RUN_RETENTION_S,
    run_memory_mb: int = DEFAULT_RUN_MEMORY_BYTES // 2**20,
    state: str | None = None,
    a2a: A2AOptions | None = None,
) -> None:
    """Serve ``agent`` at ``address`` (port 0: a free one, given to ``on_ready``) until
    SIGTERM or SIGINT; runs in flight get a grace period, then are cancelled.
    ``data_limit_mb``: what it keeps on disk (None: ``$MESH_DATA_LIMIT_MB``, else 50).
    Finished runs' records and events stay findable for ``run_retention_s``, within
    ``run_memory_mb`` of memory (the oldest go first). ``state``: a postgresql:// DSN
    whose database the agent's replicas share (None: ``$MESH_STATE_DSN``, else files).
    ``a2a``: serve the agent over A2A v1.0 too, on the same server, with its card over
    HTTP (``mesh.rpc.a2a``)."""
    limit_retained_memory()  # before the server's threads allocate (see allocator)
    limit = DataLimit.resolve() if data_limit_mb is None else DataLimit(data_limit_mb)
    if state is not None:
        use_state(state)
    provider = setup_tracing(agent.name, budget_bytes=limit.trace_bytes)
    stores: Stores | None = None
    tool_admin: ToolAdmin | None = None
    try:
        audit_log = AuditLog.for_service(agent.name, limit.audit_bytes)
        stores = open_stores(agent.name, limit, run_retention_s=run_retention_s,
                             run_memory_bytes=run_memory_mb * 2**20)  # fmt: skip
        for change in record_definition(agent, stores.changes):
            if change.action != "configured":
                log.info("%s: %s %s", agent.name, change.action.replace("_", " "), change.tool)
        tool_admin = ToolAdmin(agent, stores.changes, security)
        if replayed := tool_admin.restore():
            log.info("%s: %d tool change(s) replayed from %s", agent.name, replayed,
                     stores.changes.where)  # fmt: skip
        if (notifications := state_notifications()) is not None:
            tool_admin.follow(notifications)  # changes made on other replicas
            if not notifications.wait_following(FOLLOW_WAIT_S):  # no cancel missed once up
                log.warning("%s: not yet listening to the other replicas; serving anyway",
                            agent.name)  # fmt: skip
        served = ServedAgent(
            agent, ProtoCodec(), max_concurrent_runs=max_concurrent_runs, audit=audit_log,
            ledger=stores.ledger, sessions=stores.sessions, shared=stores.shared,
            store=RunStore(retention_s=run_retention_s, max_bytes=run_memory_mb * 2**20),
        )  # fmt: skip
        gc.freeze()  # what start-up built lives as long as the process: collections skip it
        asyncio.run(
            serve_async(
                served,
                address,
                on_ready=on_ready,
                security=security,
                tool_admin=tool_admin,
                health_address=health_address,
                a2a=a2a,
            )
        )
    finally:
        if tool_admin is not None:
            tool_admin.close()
        if stores is not None:
            stores.close()
        close_state()
        provider.shutdown()  # flush spans; bounded by the exporters' short timeouts
