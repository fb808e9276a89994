"""Where model-written code runs: the executor contract and its implementations."""

from mesh.sandbox.base import ExecutionResult, Executor, ToolBridge
from mesh.sandbox.local import UnsafeLocalExecutor
from mesh.sandbox.snippet import DEFAULT_AUTHORIZED_IMPORTS

__all__ = [
    "DEFAULT_AUTHORIZED_IMPORTS",
    "ExecutionResult",
    "Executor",
    "ToolBridge",
    "UnsafeLocalExecutor",
]
