"""Serving one agent: the smolmesh.v1 agent service, health, reflection, graceful stop.

On SIGTERM or SIGINT the server reports NOT_SERVING, stops accepting calls,
lets runs in flight finish within the grace period, then cancels them (which
kills their jails) and exits once their calls have unwound.

With ``health_address``, grpc.health.v1 is also served there in plaintext,
and nothing else: Kubernetes' native gRPC probes cannot speak TLS, so a mesh
that requires it would otherwise have no probe.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh._proto import agent_pb2 as pb
from mesh.errors import ConfigError
from mesh.host.served_agent import ServedAgent
from mesh.rpc.a2a.options import A2A_SERVICE_NAME, A2AOptions
from mesh.rpc.convert import SERVICE_NAME
from mesh.rpc.handlers import add_agent_service
from mesh.rpc.security import MESSAGE_SIZE_OPTIONS, MeshSecurity, TokenAuthInterceptor
from mesh.rpc.server_spans import ServerSpans
from mesh.rpc.servicer import AgentServicer
from mesh.rpc.tool_admin import ToolAdmin

if TYPE_CHECKING:
    from mesh.rpc.a2a.service import CardServer

__all__ = ["SERVICE_NAME", "serve"]

log = logging.getLogger(__name__)


async def serve(
    served: ServedAgent[pb.RunEvent],
    address: str,
    *,
    grace_s: float = 10.0,
    on_ready: Callable[[int], None] | None = None,
    security: MeshSecurity | None = None,
    tool_admin: ToolAdmin | None = None,
    health_address: str | None = None,
    a2a: A2AOptions | None = None,
) -> None:
    """Serve ``served`` at ``address`` ("host:port"; port 0 picks a free one) until
    signalled; with ``a2a``, over A2A v1.0 too (``mesh.rpc.a2a``)."""
    interceptors: list[grpc.aio.ServerInterceptor] = [ServerSpans(SERVICE_NAME, A2A_SERVICE_NAME)]
    if security is not None and security.tokens:
        interceptors.insert(0, TokenAuthInterceptor(security))  # refuse before any work
    server = grpc.aio.server(interceptors=interceptors, options=[
        *MESSAGE_SIZE_OPTIONS,
        ("grpc.so_reuseport", 0),
    ])  # fmt: skip
    add_agent_service(AgentServicer(served, tool_admin, security), server)
    services = [SERVICE_NAME]
    if a2a is not None:
        from mesh.rpc.a2a.service import add_a2a_service  # the SDK: loaded only to be served

        add_a2a_service(served, server)
        services.append(A2A_SERVICE_NAME)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*services, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                        server)  # fmt: skip
    port = _listen(server, address, security)
    card = _card_server(served, address, port, a2a, security) if a2a is not None else None
    before = asyncio.all_tasks()
    probes = _health_only_server(health_servicer, health_address) if health_address else None
    await server.start()
    if probes is not None:
        await probes.start()
    if card is not None:
        await card.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if on_ready is not None:
        on_ready(port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info(
        "%s: stopping (grace %.0f s, %d run(s) in flight)", served.name, grace_s, len(served.runs)
    )
    await health_servicer.enter_graceful_shutdown()
    stopping = asyncio.ensure_future(server.stop(grace_s))
    await asyncio.sleep(0)  # let stop() close the listener before runs are cancelled
    await asyncio.wait([stopping], timeout=grace_s)
    served.shutdown()
    await stopping
    if probes is not None:
        await probes.stop(0)
    if card is not None:
        await card.stop()
    await _settle(asyncio.all_tasks() - before, timeout_s=5.0)


async def _settle(tasks: set[asyncio.Task[Any]], timeout_s: float) -> None:
    """Let the tasks of calls that just ended finish unwinding. The server stops once gRPC's
    core has finished every call, which can be a moment before their tasks have: whatever is
    left is cancelled when the loop closes, and gRPC logs a traceback for each such task."""
    tasks.discard(asyncio.current_task())
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s)


def _listen(server: grpc.aio.Server, address: str, security: MeshSecurity | None) -> int:
    """The port bound; a port that is taken is a clear error, not a traceback."""
    try:
        if security is not None and security.tls:
            return server.add_secure_port(address, security.server_credentials())
        return server.add_insecure_port(address)
    except RuntimeError as err:  # grpc says only "Failed to bind to address ..."
        raise ConfigError(
            f"cannot listen on {address}: the address is in use or not this machine's "
            "(is another mesh running? `mesh up` and `mesh demo` accept port 0)"
        ) from err


def _card_server(served: ServedAgent[pb.RunEvent], address: str, port: int, a2a: A2AOptions,
                 security: MeshSecurity | None) -> CardServer:  # fmt: skip
    """The A2A card's server; the card names the gRPC address clients reach (given, or this
    server's own, with a wildcard host as localhost)."""
    host = address.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]"):
        host = "localhost"
    url = a2a.public_url or f"{host}:{port}"
    from mesh.rpc.a2a.card import agent_card
    from mesh.rpc.a2a.service import CardServer

    return CardServer(agent_card(served.agent, url, security), a2a.http_address)


def _health_only_server(health_servicer: health.aio.HealthServicer, address: str
                        ) -> grpc.aio.Server:  # fmt: skip
    """A plaintext server with the health service alone (see the module docstring)."""
    probes = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probes)
    probes.add_insecure_port(address)
    return probes
