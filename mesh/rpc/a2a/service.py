"""Serving a mesh agent over A2A v1.0 too: ``lf.a2a.v1.A2AService`` and its agent card.

The service shares the agent's gRPC server (its port, TLS, token check and
server spans, so the W3C ``traceparent`` an A2A client sends parents the
run's trace as any mesh call's does). The SDK's ``GrpcHandler`` turns the
wire into ``MeshTaskHandler`` calls; two things it does not do as the 1.0
spec says are done here: the ``a2a-version`` metadata is checked on every
call (empty means 0.3, which this binding does not speak), and A2A errors get
the spec's status codes (UNIMPLEMENTED for unsupported operations, push
notifications and versions) with a ``google.rpc.ErrorInfo`` of the spec's
domain. Our own errors keep our mapping (``mesh.rpc.status``), and anything
unexpected is INTERNAL with a reference id, never a traceback to the caller.

The public agent card is served over HTTP at ``/.well-known/agent-card.json``
(the SDK's route, with its ETag), on its own address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from typing import Any

import grpc
import uvicorn
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.grpc_handler import GrpcHandler
from a2a.server.routes.agent_card_routes import create_agent_card_routes
from a2a.types import a2a_pb2 as a2a
from a2a.utils import errors as a2a_errors
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from a2a.utils.proto_utils import validation_errors_to_bad_request
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from packaging.version import InvalidVersion, Version
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mesh._proto import agent_pb2 as pb
from mesh.host.served_agent import ServedAgent
from mesh.rpc.a2a.card import PROTOCOL_VERSION
from mesh.rpc.a2a.handler import MeshTaskHandler
from mesh.rpc.a2a.options import A2A_SERVICE_NAME, A2AOptions
from mesh.rpc.handlers import add_service
from mesh.rpc.http_socket import bound_socket
from mesh.text import clip

__all__ = ["A2A_SERVICE_NAME", "A2AOptions", "CardServer", "add_a2a_service"]

log = logging.getLogger(__name__)

ERROR_DOMAIN = "a2a-protocol.org"
MAX_STATUS_MESSAGE_CHARS = 1000
CARD_MAX_AGE_S = 300
"""How long a client may cache the card: it changes when the agent's tools do."""

_STATUS: dict[type[a2a_errors.A2AError], grpc.StatusCode] = {
    a2a_errors.TaskNotFoundError: grpc.StatusCode.NOT_FOUND,
    a2a_errors.TaskNotCancelableError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.PushNotificationNotSupportedError: grpc.StatusCode.UNIMPLEMENTED,
    a2a_errors.UnsupportedOperationError: grpc.StatusCode.UNIMPLEMENTED,
    a2a_errors.ContentTypeNotSupportedError: grpc.StatusCode.INVALID_ARGUMENT,
    a2a_errors.InvalidAgentResponseError: grpc.StatusCode.INTERNAL,
    a2a_errors.ExtendedAgentCardNotConfiguredError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.ExtensionSupportRequiredError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.VersionNotSupportedError: grpc.StatusCode.UNIMPLEMENTED,
    a2a_errors.InvalidParamsError: grpc.StatusCode.INVALID_ARGUMENT,
    a2a_errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    a2a_errors.MethodNotFoundError: grpc.StatusCode.UNIMPLEMENTED,
    a2a_errors.InternalError: grpc.StatusCode.INTERNAL,
}
"""The 1.0 spec's table (section 5.4) for its errors, and gRPC's own codes for the rest."""


class SpecGrpcHandler(GrpcHandler):
    """The SDK's servicer, with the version check and the error mapping of the 1.0 spec."""

    def _build_call_context(self, context: grpc.aio.ServicerContext[Any, Any],
                            request: Any) -> ServerCallContext:  # fmt: skip
        _check_version(dict(context.invocation_metadata() or ()).get("a2a-version", ""))
        return super()._build_call_context(context, request)

    async def abort_context(self, error: a2a_errors.A2AError,
                            context: grpc.aio.ServicerContext[Any, Any]) -> None:  # fmt: skip
        code = _STATUS.get(type(error), grpc.StatusCode.INTERNAL)
        reason = a2a_errors.A2A_ERROR_REASONS.get(type(error), "INTERNAL_ERROR")
        message = clip(str(getattr(error, "message", error)), MAX_STATUS_MESSAGE_CHARS)
        status = status_pb2.Status(code=code.value[0], message=message)
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
        status.details.append(info)
        if isinstance(error, a2a_errors.InvalidParamsError) and (error.data or {}).get("errors"):
            bad = any_pb2.Any()
            bad.Pack(validation_errors_to_bad_request(error.data["errors"]))  # type: ignore[index]
            status.details.append(bad)
        rich = rpc_status.to_status(status)
        await context.abort(rich.code, rich.details, rich.trailing_metadata)


def _check_version(value: str | bytes) -> None:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if not text:
        raise a2a_errors.VersionNotSupportedError(
            f"no a2a-version metadata, which means 0.3: this agent speaks A2A {PROTOCOL_VERSION}"
        )
    try:
        version = Version(text)
    except InvalidVersion:
        version = None
    if version is None or (version.major, version.minor) != (1, 0):
        raise a2a_errors.VersionNotSupportedError(
            f"a2a-version {clip(text, 20)!r} is not supported: this agent speaks A2A "
            f"{PROTOCOL_VERSION}"
        )


def add_a2a_service(served: ServedAgent[pb.RunEvent], server: grpc.aio.Server) -> None:
    service = a2a.DESCRIPTOR.services_by_name["A2AService"]
    assert service.full_name == A2A_SERVICE_NAME
    add_service(SpecGrpcHandler(MeshTaskHandler(served)), service, server)


class _LastModified:
    """Adds ``Last-Modified`` (the server's start: the card is built then) to responses."""

    def __init__(self, app: ASGIApp, since: float) -> None:
        self.app = app
        self.value = formatdate(since, usegmt=True).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"last-modified", self.value))
            await send(message)

        await self.app(scope, receive, stamped)


class CardServer:
    """The agent card over HTTP, in the server's own event loop (uvicorn, no threads)."""

    def __init__(self, card: a2a.AgentCard, address: str) -> None:
        host = address.rpartition(":")[0]
        self._socket = bound_socket(address, "the A2A agent card")
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{host or '127.0.0.1'}:{self.port}{AGENT_CARD_WELL_KNOWN_PATH}"
        routes = create_agent_card_routes(card, cache_control=f"public, max-age={CARD_MAX_AGE_S}")
        app = Starlette(routes=routes, middleware=[Middleware(_LastModified, since=time.time())])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # its error, if it could not start
        log.info("A2A agent card at %s", self.url)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()
