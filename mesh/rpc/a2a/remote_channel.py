"""How calls reach a remote A2A agent: the client, its channel, and what each call carries.

An A2A card gives a gRPC interface as a URL, and in the wild that URL is
``host:port``, ``grpc://host:port``, ``grpcs://host`` or ``https://host/a2a``
(gRPC cannot route on a path, so a path is dropped). TLS follows the URL:
``grpcs``/``https`` use TLS with the system's roots; a plain address uses TLS
only when the mesh does (``[auth]`` with certificates: the mesh's CA, and our
certificate for mutual TLS), as for any agent of the mesh.

Each call carries W3C trace context (the remote server's spans join our
trace) and, when one is configured, ``authorization: Bearer TOKEN``: as A2A
*service parameters*, which its gRPC binding sends as metadata and its HTTP
bindings as headers. The mesh's own token is never sent: it is for the
mesh's agents, not for another organisation's.

Errors of the A2A SDK, of gRPC and of HTTP become ``MeshError``s in one
place, ``translated``; what the remote agent said is clipped.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.client.errors import A2AClientError, A2AClientTimeoutError
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import A2AError
from opentelemetry import propagate, trace
from opentelemetry.trace import Span

from mesh.errors import (
    AgentUnavailableError,
    DeadlineExceededError,
    MeshError,
    PermissionDeniedError,
    RemoteAgentError,
    UnauthenticatedError,
)
from mesh.rpc.a2a.card_fetch import BINDINGS, usable_interfaces
from mesh.rpc.a2a.remote_loop import BackgroundLoop
from mesh.rpc.security import MeshSecurity
from mesh.text import clip

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Connection",
    "call_parameters",
    "grpc_target",
    "open_grpc_channel",
    "translated",
]

MAX_MESSAGE_BYTES = 2 << 20
"""The largest message we accept from a remote agent: over the largest answer we keep
(``remote_task.MAX_ANSWER_BYTES``), so that an answer too big is refused by us, with a
clear error, rather than by gRPC."""
_TLS_SCHEMES = {"grpcs": 443, "https": 443}
_PLAIN_SCHEMES = {"grpc": 80, "http": 80}
_GRPC_ERRORS: dict[grpc.StatusCode, type[MeshError]] = {
    grpc.StatusCode.UNAVAILABLE: AgentUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


class Connection:
    """One agent's client of the A2A SDK and the loop it lives on (``remote_loop``),
    opened on first use. ``client()`` and ``aclose()`` run on that loop."""

    def __init__(self, name: str, card: a2a.AgentCard, security: MeshSecurity | None) -> None:
        self.name = name
        self.card = card
        self.security = security
        self.loop = BackgroundLoop(f"a2a-{name}")
        self._client: Client | None = None
        self._http: httpx.AsyncClient | None = None

    def client(self) -> Client:
        if self._client is None:
            interfaces = usable_interfaces(self.card)
            if interfaces and interfaces[0].protocol_binding != BINDINGS[0]:
                # Not gRPC: HTTP, without a timeout of its own (httpx's is 5 s), as each
                # call carries the caller's deadline.
                self._http = httpx.AsyncClient(timeout=None)
            config = ClientConfig(
                streaming=self.card.capabilities.streaming,
                supported_protocol_bindings=list(BINDINGS),
                use_client_preference=True,
                grpc_channel_factory=lambda url: open_grpc_channel(url, self.security),
                httpx_client=self._http,
            )
            try:
                self._client = ClientFactory(config).create(self.card)
            except ValueError as err:  # fetch_card checked for an interface: one it missed
                raise RemoteAgentError(f"{self.name}: no usable interface in its card") from err
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._http is not None:
            await self._http.aclose()

    def close(self) -> None:
        """Close the client and stop the loop (safe to call again)."""
        self.loop.stop(self.aclose())


def grpc_target(url: str) -> tuple[str, bool]:
    """The gRPC target (``host:port``) of an interface URL, and whether it asks for TLS."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"grpc://{text}")
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is no number
        port = None
    default = _TLS_SCHEMES.get(scheme) or _PLAIN_SCHEMES.get(scheme)
    host = parts.hostname
    if default is None or not host or (port is None and "://" not in text):
        raise RemoteAgentError(f"unusable A2A gRPC interface URL {clip(url, 120)!r}")
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port or default}", scheme in _TLS_SCHEMES


def open_grpc_channel(url: str, security: MeshSecurity | None) -> grpc.aio.Channel:
    """An asyncio channel to the interface at ``url`` (see the module docstring for TLS).
    It belongs to the event loop running now: use and close it on that loop."""
    target, tls = grpc_target(url)
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]  # fmt: skip
    if tls:
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
    if security is not None and security.tls:
        return grpc.aio.secure_channel(target, security.channel_credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)


def call_parameters(span: Span, token: str | None) -> dict[str, str]:
    """The service parameters of a call made under ``span``: its trace context, and the
    bearer token if there is one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    if token:
        carrier["authorization"] = f"Bearer {token}"
    return carrier


def translated(err: BaseException, name: str) -> MeshError:
    """``err``, raised calling the agent ``name``, as a MeshError; an error that is none
    of the SDK's, gRPC's or HTTP's is a bug, raised again as it is."""
    if isinstance(err, MeshError):
        return err
    if isinstance(err, A2AClientTimeoutError):
        return DeadlineExceededError(f"the call to {name} ran past its deadline")
    cause: Any = err.__cause__ if isinstance(err, A2AClientError) else err
    if isinstance(cause, grpc.aio.AioRpcError):
        kind = _GRPC_ERRORS.get(cause.code(), RemoteAgentError)
        return kind(f"{name}: {cause.code().name}: {clip(cause.details() or '', 300)}")
    if isinstance(cause, httpx.TimeoutException):
        return DeadlineExceededError(f"the call to {name} ran past its deadline")
    if isinstance(cause, httpx.TransportError):
        return AgentUnavailableError(f"{name} cannot be reached: {type(cause).__name__}")
    if isinstance(err, A2AError):
        return RemoteAgentError(f"{name} refused the call: {type(err).__name__}: "
                                f"{clip(str(err), 300)}")  # fmt: skip
    if isinstance(err, ValueError):  # the SDK's word for a response it cannot read
        return RemoteAgentError(f"{name} sent a response that cannot be read")
    raise err
