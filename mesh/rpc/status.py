"""Errors <-> gRPC status codes, in one place.

Servers: ``@translate_errors`` on every servicer method turns a ``MeshError``
into its status code with the error's message, plus trailing metadata
``mesh-error-code`` and ``mesh-retryable`` for clients that want the precise
kind. Anything unexpected becomes INTERNAL with a generic message and a
reference; the traceback goes to the server log, never to the client. A call
that is over (its client went away, its deadline passed, the server stopped)
ends quietly: nobody is left to tell, and nothing about it is a bug.

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
from typing import Any, TypeVar

import grpc

from mesh import errors as e
from mesh.rpc.handlers import MalformedRequest
from mesh.text import clip

__all__ = ["error_from_rpc", "status_for", "translate_errors"]

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[e.MeshError], grpc.StatusCode]] = [
    (e.InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.ToolArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (e.ToolNotFoundError, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (e.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (e.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (e.RunCancelledError, grpc.StatusCode.CANCELLED),
    (e.BusyError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.MaxStepsError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.BudgetExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.AgentUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (e.ExecutorError, grpc.StatusCode.UNAVAILABLE),
    (e.ToolExecutionError, grpc.StatusCode.ABORTED),
    (e.ModelCallError, grpc.StatusCode.UNAVAILABLE),
    (e.MeshError, grpc.StatusCode.FAILED_PRECONDITION),
]

_ERRORS: dict[grpc.StatusCode, type[e.MeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: e.InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: e.NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: e.AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: e.PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: e.PermissionDeniedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: e.DeadlineExceededError,
    grpc.StatusCode.CANCELLED: e.RunCancelledError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: e.BusyError,
    grpc.StatusCode.UNAVAILABLE: e.AgentUnavailableError,
}

F = TypeVar("F", bound=Callable[..., Any])
MAX_STATUS_MESSAGE_CHARS = 1000
"""A status message is a header: one that repeats a huge request would overflow the
metadata limit and hide the real status."""
_NOT_OURS = (asyncio.CancelledError, GeneratorExit, grpc.aio.AbortError)
"""How a call ends that is not an error to report: cancelled, closed, already aborted."""


def status_for(err: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(err, e.MeshError):
        code = next(status for kind, status in _STATUS if isinstance(err, kind))
        if isinstance(err, e.ModelCallError) and not err.retryable:
            code = grpc.StatusCode.FAILED_PRECONDITION
        return code, clip(err.message, MAX_STATUS_MESSAGE_CHARS)
    reference = uuid.uuid4().hex[:12]
    log.error("internal error (ref %s)", reference, exc_info=err)
    return grpc.StatusCode.INTERNAL, f"internal error (ref {reference}; see the server log)"


async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: BaseException) -> None:
    code, message = status_for(err)
    if isinstance(err, e.MeshError):
        context.set_trailing_metadata((
            ("mesh-error-code", err.code),
            ("mesh-retryable", "true" if err.retryable else "false"),
        ))  # fmt: skip
    with _unless_over():
        await context.abort(code, message)


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
    """Wrap a unary or server-streaming aio servicer method.

    A server-streaming method (an async generator) becomes a coroutine that writes each item
    with ``context.write``. Given the generator itself, gRPC drops it unclosed when the call
    ends while it waits at a ``yield`` (the client went away, the deadline passed); the garbage
    collector then closes it in another task, where its ``finally`` blocks run late and out of
    their context ("Failed to detach context", "Task exception was never retrieved"). Here it
    is closed in the call's own task, whatever ends the call.
    """
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: Any) -> None:
            try:
                _refuse_malformed(request)
                async with contextlib.aclosing(method(self, request, context)) as items:
                    async for item in items:
                        await _write(context, item)
            except _NOT_OURS:
                raise
            except BaseException as err:
                await _abort(context, err)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            _refuse_malformed(request)
            return await method(self, request, context)
        except _NOT_OURS:
            raise
        except BaseException as err:
            await _abort(context, err)

    return unary  # type: ignore[return-value]


def _refuse_malformed(request: Any) -> None:
    if isinstance(request, MalformedRequest):
        raise e.InvalidRequestError(
            f"the request is not a valid {request.message_type}: {request.error}"
        )


def error_from_rpc(err: grpc.RpcError, who: str) -> e.MeshError:
    """A ``MeshError`` for a failed call to ``who``, keeping the server's message."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    metadata = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    trailing: dict[str, Any] = {item.key: item.value for item in metadata or ()}
    kind = _ERRORS.get(code, e.RemoteAgentError)
    error = kind(f"{who}: {code.name}: {details}")
    if "mesh-retryable" in trailing:
        error.retryable = trailing["mesh-retryable"] == "true"
    remote_code = trailing.get("mesh-error-code")
    if isinstance(remote_code, str):
        error.code = remote_code
    return error
