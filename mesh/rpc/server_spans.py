"""The SERVER span of each call a service answers, opened and closed in the call's task."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from mesh.telemetry.spans import record_rpc_status, server_span

__all__ = ["ServerSpans"]


if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]  # generic only in the type stubs
Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ServerSpans(grpc.aio.ServerInterceptor):
    """A SERVER span per call of the ``services`` (not health or reflection), under the
    caller's W3C trace context.

    By hand, like the client span in ``remote``: OpenTelemetry's aio interceptor holds a
    streaming call's span and attached context in an async generator, which gRPC drops
    unclosed when the call ends mid-stream; closed later by the garbage collector in another
    task, it cannot detach the context ("Failed to detach context" in the log). The
    servicer's methods are coroutines (see ``status.translate_errors``), so here each call's
    span opens and closes in the call's own task.
    """

    def __init__(self, *services: str) -> None:
        self.prefixes = tuple(f"/{service}/" for service in services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method or ""
        if handler is None or not method.startswith(self.prefixes):
            return handler
        carrier = {key: value for key, value in details.invocation_metadata or ()
                   if isinstance(value, str)}  # fmt: skip
        serializers = handler.request_deserializer, handler.response_serializer
        if inspect.iscoroutinefunction(handler.unary_unary):
            return grpc.unary_unary_rpc_method_handler(
                _traced(handler.unary_unary, method, carrier), *serializers
            )
        if inspect.iscoroutinefunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _traced(handler.unary_stream, method, carrier), *serializers
            )
        return handler


def _traced(behavior: Behavior, method: str, carrier: dict[str, str]) -> Behavior:
    async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with server_span(method, carrier) as span:
            code = grpc.StatusCode.UNKNOWN
            try:
                result = await behavior(request, context)
                code = grpc.StatusCode.OK
                return result
            except grpc.aio.AbortError:
                code = context.code() or code
                raise
            except asyncio.CancelledError:  # the client went away, or its deadline passed
                remaining = context.time_remaining()
                code = (grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None
                        and remaining <= 0 else grpc.StatusCode.CANCELLED)  # fmt: skip
                raise
            finally:
                record_rpc_status(span, code.value[0], code.name)

    return traced
