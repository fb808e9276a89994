"""How an agent is offered over A2A, in a module light enough for configs and the CLI to
import: the SDK and the servers load only when an agent is served over A2A."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["A2A_SERVICE_NAME", "A2AOptions"]

A2A_SERVICE_NAME = "lf.a2a.v1.A2AService"
"""The A2A gRPC service (``mesh.rpc.a2a.service`` checks it against the SDK's descriptor)."""


@dataclass(frozen=True)
class A2AOptions:
    """Serving an agent over A2A (``[agents.NAME.a2a]``, ``mesh serve --a2a``): where its
    card is served over HTTP ("host:port", port 0: a free one), and the gRPC address the
    card gives callers (empty: the agent's own)."""

    http_address: str = "127.0.0.1:0"
    public_url: str = ""
