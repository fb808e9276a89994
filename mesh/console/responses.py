"""The console's error responses: a status and ``{"error": message}``, never a traceback.

One place maps the mesh's errors to HTTP statuses, as ``mesh.rpc.status`` does for
gRPC: the request's own mistakes (bad input, an unknown run) keep their status and
message; an agent that cannot be reached, or that failed otherwise, is the mesh
answering badly (502). Anything unexpected is a bug of the console: 500 with a
reference id, the traceback in the console's log only.
"""

from __future__ import annotations

import logging
import uuid

from starlette.responses import JSONResponse

from mesh.errors import (
    BusyError,
    ConfigError,
    InvalidRequestError,
    MeshError,
    NotFoundError,
    SessionBusyError,
)
from mesh.text import clip

__all__ = ["MAX_ERROR_CHARS", "error_response", "internal_error", "mesh_error_response"]

log = logging.getLogger("mesh.console")

MAX_ERROR_CHARS = 500
"""An error message is clipped to this: it may quote what a client sent."""

_STATUS: list[tuple[type[MeshError], int]] = [
    (InvalidRequestError, 400),
    (ConfigError, 400),
    (NotFoundError, 404),
    (SessionBusyError, 409),  # another turn of the session is going: wait for it
    (BusyError, 429),  # the agent is at its limit of concurrent runs: try again
]
"""The request's own mistakes; every other MeshError is the mesh failing: 502."""


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": clip(message, MAX_ERROR_CHARS)}, status_code=status)


def mesh_error_response(err: MeshError) -> JSONResponse:
    status = next((code for kind, code in _STATUS if isinstance(err, kind)), 502)
    return error_response(status, err.message)


def internal_error(err: BaseException) -> JSONResponse:
    """A bug: 500 with a reference id that finds the traceback in the console's log."""
    reference = uuid.uuid4().hex[:12]
    log.error("console error (ref %s)", reference, exc_info=err)
    return error_response(500, f"internal error of the console (ref {reference})")
