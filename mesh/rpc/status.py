"""Errors <-> gRPC status codes, in one place.

Servers: ``translate_errors``, applied to every handler where they are
registered, turns a ``MeshError`` into its status code with the error's message,
plus an ``ErrorDetail`` (reason, retryable, metadata, message) in the rich
status for clients that want the precise kind. Anything unexpected becomes
INTERNAL with a generic message and a reference; the traceback goes to the
server log, never to the client. A call that is over (its client went away, its
deadline passed, the server stopped) ends quietly: nobody is left to tell, and
nothing about it is a bug.

Clients: ``error_from_rpc`` turns a failed call back into a ``MeshError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from mesh import errors as e
from mesh._proto import agent_pb2 as pb
from mesh.text import clip

__all__ = ["MalformedRequest", "abort_for", "error_from_rpc", "status_for", "translate_errors"]

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[e.MeshError], grpc.StatusCode]] = [
    (e.InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.ToolArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (e.ToolNotFoundError, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (e.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (e.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (e.RunCancelledError, grpc.StatusCode.CANCELLED),
    (e.BusyError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.SessionBusyError, grpc.StatusCode.FAILED_PRECONDITION),
    (e.MaxStepsError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.BudgetExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.AgentUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (e.StateUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (e.ExecutorError, grpc.StatusCode.UNAVAILABLE),
    (e.ToolExecutionError, grpc.StatusCode.ABORTED),
    (e.CodeError, grpc.StatusCode.ABORTED),
    (e.ModelCallError, grpc.StatusCode.UNAVAILABLE),
    (e.MeshError, grpc.StatusCode.FAILED_PRECONDITION),
]

_ERRORS: dict[grpc.StatusCode, type[e.MeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: e.InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: e.NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: e.AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: e.PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: e.UnauthenticatedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: e.DeadlineExceededError,
    grpc.StatusCode.CANCELLED: e.RunCancelledError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: e.BusyError,
    grpc.StatusCode.UNAVAILABLE: e.AgentUnavailableError,
}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class MalformedRequest:
    """What a request that did not decode becomes (see ``handlers``): refused here."""

    message_type: str
    error: str


MAX_STATUS_MESSAGE_CHARS = 1000
"""A status message is a header: one that repeats a huge request would overflow the
metadata limit and hide the real status."""
_NOT_OURS = (asyncio.CancelledError, GeneratorExit, grpc.aio.AbortError)
"""How a call ends that is not an error to report: cancelled, closed, already aborted."""


def status_for(err: BaseException) -> tuple[grpc.StatusCode, str, pb.ErrorDetail]:
    """The status code, message and detail a caller gets for ``err``."""
    if isinstance(err, e.MeshError):
        code = next(status for kind, status in _STATUS if isinstance(err, kind))
        if isinstance(err, e.ModelCallError) and not err.retryable:
            code = grpc.StatusCode.FAILED_PRECONDITION
        message = clip(err.message, MAX_STATUS_MESSAGE_CHARS)
        detail = pb.ErrorDetail(reason=err.code, retryable=err.retryable, message=message)
        return code, message, detail
    reference = uuid.uuid4().hex[:12]
    log.error("internal error (ref %s)", reference, exc_info=err)
    message = f"internal error (ref {reference}; see the server log)"
    detail = pb.ErrorDetail(reason="internal", metadata={"reference": reference}, message=message)
    return grpc.StatusCode.INTERNAL, message, detail


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], err: BaseException) -> None:
    """End the call as ``err`` deserves: its status code, message and ``ErrorDetail``."""
    await _abort_with(context, *status_for(err))


async def _abort_with(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    detail: pb.ErrorDetail,
) -> None:
    packed = any_pb2.Any()
    packed.Pack(detail)
    status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[packed])
    )
    with _unless_over():
        await context.abort(status.code, status.details, status.trailing_metadata)


async def _write(context: grpc.aio.ServicerContext[Any, Any], item: Any) -> None:
    with _unless_over():
        await context.write(item)


@contextlib.contextmanager
def _unless_over() -> Iterator[None]:
    """gRPC's own errors for a call that is over (a failed batch, a finished RPC, a stopped
    server) end the handler the way a cancelled call ends, which gRPC notes at debug level.
    Raised as they are, gRPC may log them with a traceback: it does when the write fails
    before it has noticed that the client left."""
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except grpc.aio.BaseError as err:
        raise asyncio.CancelledError(f"the call is over: {err}") from err


def translate_errors(method: F) -> F:
    """Wrap a unary or server-streaming aio handler (a method, or a bound one: the request
    and context come last), so that whatever it raises ends the call with its status.

    A server-streaming method (an async generator) becomes a coroutine that writes each item
    with ``context.write``. Given the generator itself, gRPC drops it unclosed when the call
    ends while it waits at a ``yield`` (the client went away, the deadline passed); the garbage
    collector then closes it in another task, where its ``finally`` blocks run late and out of
    their context ("Failed to detach context", "Task exception was never retrieved"). Here it
    is closed in the call's own task, whatever ends the call.
    """
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(*args: Any) -> None:
            request, context = args[-2:]
            try:
                _refuse_malformed(request)
                async with contextlib.aclosing(method(*args)) as items:
                    async for item in items:
                        await _write(context, item)
            except _NOT_OURS:
                raise
            except BaseException as err:
                await abort_for(context, err)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary(*args: Any) -> Any:
        request, context = args[-2:]
        try:
            _refuse_malformed(request)
            return await method(*args)
        except _NOT_OURS:
            raise
        except BaseException as err:
            await abort_for(context, err)

    return unary  # type: ignore[return-value]


def _refuse_malformed(request: Any) -> None:
    if isinstance(request, MalformedRequest):
        raise e.InvalidRequestError(
            f"the request is not a valid {request.message_type}: {request.error}"
        )


def error_from_rpc(err: grpc.RpcError, who: str) -> e.MeshError:
    """The ``MeshError`` the server raised (same class, message, retryable flag) for a
    failed call to ``who``; from the status code alone when it sent no detail (a call that
    never reached a mesh service)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    detail = _detail(err)
    if detail is None:
        return _ERRORS.get(code, e.RemoteAgentError)(f"{who}: {code.name}: {message}")
    kind = e.error_class(detail.reason) or _ERRORS.get(code, e.RemoteAgentError)
    error = kind(f"{who}: {code.name}: {message}", retryable=detail.retryable)
    error.code = detail.reason or error.code
    return error


def _detail(err: grpc.RpcError) -> pb.ErrorDetail | None:
    """The ErrorDetail in the call's rich status, if it carries one."""
    try:
        status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    except ValueError:  # a status that contradicts the call's own: not to be trusted
        return None
    details: list[any_pb2.Any] = list(status.details) if status is not None else []
    for packed in details:
        detail = pb.ErrorDetail()
        if packed.Unpack(detail):
            return detail
    return None
