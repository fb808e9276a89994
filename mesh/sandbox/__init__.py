"""Where model-written code runs: the executor contract and its implementations.

``NsjailExecutor`` (the default) runs code in a jailed interpreter;
``UnsafeLocalExecutor`` runs it in-process and exists only for development.
"""

from mesh.sandbox.base import ExecutionResult, Executor, ToolBridge
from mesh.sandbox.config import SandboxConfig
from mesh.sandbox.local import UnsafeLocalExecutor
from mesh.sandbox.nsjail import SandboxUnavailableError
from mesh.sandbox.nsjail_executor import NsjailExecutor
from mesh.sandbox.snippet import DEFAULT_AUTHORIZED_IMPORTS

__all__ = [
    "DEFAULT_AUTHORIZED_IMPORTS",
    "ExecutionResult",
    "Executor",
    "NsjailExecutor",
    "SandboxConfig",
    "SandboxUnavailableError",
    "ToolBridge",
    "UnsafeLocalExecutor",
]
