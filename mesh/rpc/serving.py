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
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from mesh.agents.base import MultiStepAgent
from mesh.rpc.definition_log import record_definition
from mesh.rpc.run_ledger import RunLedger, default_run_ledger_path
from mesh.rpc.security import MeshSecurity
from mesh.rpc.server import serve as serve_async
from mesh.rpc.tool_admin import ToolAdmin, ToolChangeLog, default_tool_log_dir
from mesh.telemetry import setup_tracing
from mesh.telemetry.audit import AuditLog, default_audit_dir

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(
    agent: MultiStepAgent,
    address: str = "127.0.0.1:50051",
    *,
    max_concurrent_runs: int = 16,
    security: MeshSecurity | None = None,
    health_address: str | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve ``agent`` at ``address`` (port 0: a free one, given to ``on_ready``) until
    SIGTERM or SIGINT; runs in flight get a grace period, then are cancelled."""
    provider = setup_tracing(agent.name)
    try:
        # One audit file per process: replicas of an agent never write to the same file.
        audit_log = AuditLog(default_audit_dir() / f"{agent.name}-{os.getpid()}.jsonl")
        changes = ToolChangeLog(default_tool_log_dir() / f"{agent.name}.jsonl")
        for change in record_definition(agent, changes):
            if change.action != "configured":
                log.info("%s: %s %s", agent.name, change.action.replace("_", " "), change.tool)
        tool_admin = ToolAdmin(agent, changes, security)
        if replayed := tool_admin.restore():
            log.info("%s: %d tool change(s) replayed from %s", agent.name, replayed, changes.path)
        ledger = RunLedger(default_run_ledger_path(agent.name))
        asyncio.run(serve_async(agent, address, max_concurrent_runs=max_concurrent_runs,
                                on_ready=on_ready, audit=audit_log, security=security,
                                tool_admin=tool_admin, ledger=ledger,
                                health_address=health_address))  # fmt: skip
    finally:
        provider.shutdown()  # flush spans; bounded by the exporters' short timeouts
