"""The one error hierarchy of smolmesh.

Every error the library raises on purpose is a ``MeshError``. Each carries a
stable machine-readable ``code`` and whether retrying the same call may
succeed (``retryable``), so that callers, and later the gRPC layer, can map
them without parsing messages::

    MeshError
    ├── ConfigError                  bad configuration or arguments at start-up
    ├── ToolError
    │   ├── ToolDefinitionError      a @tool function or Tool class is ill-formed
    │   ├── ToolNotFoundError        no tool of that name
    │   ├── ToolArgumentError        a call does not match the tool's schema
    │   └── ToolExecutionError       the tool ran and failed
    ├── ModelError
    │   ├── ModelCallError           the provider call failed (retryable or not)
    │   ├── ModelOutputError         the model answered something unusable
    │   └── CassetteError            a replay cassette has no answer for a request
    ├── ExecutorError                the code executor itself broke (not the code)
    ├── CodeError                    the model's code failed: it raised, or broke a sandbox limit
    ├── AgentError
    │   ├── MaxStepsError            no final answer within max_steps
    │   ├── RunCancelledError        the run was cancelled
    │   ├── DeadlineExceededError    the run's deadline passed
    │   └── BudgetExceededError      the run spent its token, cost or call budget
    └── MeshRequestError             a request to (or from) another agent failed
        ├── InvalidRequestError      the request itself is wrong
        ├── NotFoundError            no such agent, tool or run
        ├── AlreadyExistsError       e.g. adding a tool that exists, without replace
        ├── PermissionDeniedError    the caller may not do that
        │   └── UnauthenticatedError no valid credentials
        ├── BusyError                the agent is at its limit of concurrent runs
        ├── SessionBusyError         another run of the same session is going
        ├── AgentUnavailableError    the agent cannot be reached (retryable)
        ├── StateUnavailableError    the shared state database cannot be reached (retryable)
        └── RemoteAgentError         the remote agent failed otherwise

Errors *inside* a run (a bad tool call, code that raises, unparseable model
output) become observations the model can read; they only escape ``run()``
when the run cannot go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "AgentError",
    "AgentUnavailableError",
    "AlreadyExistsError",
    "BudgetExceededError",
    "BusyError",
    "CassetteError",
    "CodeError",
    "ConfigError",
    "DeadlineExceededError",
    "ErrorInfo",
    "ExecutorError",
    "InvalidRequestError",
    "MaxStepsError",
    "MeshError",
    "MeshRequestError",
    "ModelCallError",
    "ModelError",
    "ModelOutputError",
    "NotFoundError",
    "PermissionDeniedError",
    "RemoteAgentError",
    "RunCancelledError",
    "SessionBusyError",
    "StateUnavailableError",
    "ToolArgumentError",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutionError",
    "ToolNotFoundError",
    "UnauthenticatedError",
    "error_class",
]


class MeshError(Exception):
    """Base of every smolmesh error."""

    code: str = "mesh_error"
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class ConfigError(MeshError):
    code = "config_error"


class ToolError(MeshError):
    code = "tool_error"


class ToolDefinitionError(ToolError):
    code = "tool_definition_error"


class ToolNotFoundError(ToolError):
    code = "tool_not_found"


class ToolArgumentError(ToolError):
    code = "tool_invalid_arguments"


class ToolExecutionError(ToolError):
    code = "tool_execution_error"


class ModelError(MeshError):
    code = "model_error"


class ModelCallError(ModelError):
    code = "model_call_error"


class ModelOutputError(ModelError):
    code = "model_output_error"


class CassetteError(ModelError):
    code = "cassette_error"


class ExecutorError(MeshError):
    code = "executor_error"


class CodeError(MeshError):
    """What a snippet of model-written code did wrong, reported to the model (never raised
    out of a run): an exception, a syntax error, or a limit of the sandbox it broke."""

    code = "code_error"


class AgentError(MeshError):
    code = "agent_error"


class MaxStepsError(AgentError):
    code = "max_steps_exceeded"


class RunCancelledError(AgentError):
    code = "run_cancelled"


class DeadlineExceededError(AgentError):
    code = "deadline_exceeded"


class BudgetExceededError(AgentError):
    code = "budget_exceeded"


class MeshRequestError(MeshError):
    code = "request_error"


class InvalidRequestError(MeshRequestError):
    code = "invalid_request"


class NotFoundError(MeshRequestError):
    code = "not_found"


class AlreadyExistsError(MeshRequestError):
    code = "already_exists"


class PermissionDeniedError(MeshRequestError):
    code = "permission_denied"


class UnauthenticatedError(PermissionDeniedError):
    code = "unauthenticated"


class BusyError(MeshRequestError):
    code = "busy"
    retryable = True


class SessionBusyError(MeshRequestError):
    """Runs of one session take turns. Not retryable as such: wait for the run going on
    (its id is in the message) to end, then send the next turn."""

    code = "session_busy"


class AgentUnavailableError(MeshRequestError):
    code = "agent_unavailable"
    retryable = True


class StateUnavailableError(MeshRequestError):
    """The database that holds a mesh's shared state (PostgreSQL) cannot be reached: what
    needs it is refused, nothing acknowledged is lost, and service resumes by itself."""

    code = "state_unavailable"
    retryable = True


class RemoteAgentError(MeshRequestError):
    code = "remote_agent_error"


@dataclass(frozen=True)
class ErrorInfo:
    """An error as data: what events and run records carry, and what crosses the wire,
    so that any client can tell a retryable failure from a final one by its reason."""

    reason: str
    message: str
    retryable: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, err: BaseException) -> ErrorInfo:
        """``err`` as data; an exception that is not a MeshError is a bug: ``internal``.
        A MeshError raised from another (a delegation that failed, seen as a failed tool
        call) names that one's code in ``metadata["cause"]``."""
        if isinstance(err, MeshError):
            cause = err.__cause__
            metadata = {"cause": cause.code} if isinstance(cause, MeshError) else {}
            return cls(err.code, err.message, err.retryable, metadata)
        return cls("internal", f"{type(err).__name__}: {err}")

    def to_exception(self) -> MeshError:
        """The error again, as the class its reason names (MeshError when none does)."""
        kind = error_class(self.reason) or MeshError
        return kind(self.message, retryable=self.retryable)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def error_class(code: str) -> type[MeshError] | None:
    """The error class whose ``code`` this is (None if none is): how a client rebuilds the
    error a server raised from the reason it sent."""
    pending: list[type[MeshError]] = [MeshError]
    while pending:
        kind = pending.pop()
        if kind.code == code:
            return kind
        pending.extend(kind.__subclasses__())
    return None
